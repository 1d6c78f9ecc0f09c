"""How the C module's API calls the compiled functions: one generic call
path for every entry point (inputs as pointers, one flat output buffer, one
workspace).  Copied verbatim into every generated C wrapper."""
import numpy

DTYPE = numpy.dtype("float64")   # the generated module's constants replace these
EXTENSION = ""
CDEF = ""
C_FILE = ""
_PTR = "double[]"
_X_DTYPE = None
_WS = {}
_WS_DIR = {}
_OUTPUTS = {}
N_PARAMS = 0
PARAM_SHAPES = {}
STEPS = None
MAX_RESULT_BYTES = 0             # api.py's, in a generated module


def _at(value, t):               # the common api.py's, in a generated module
    raise NotImplementedError


def _symmetrise(h, block=128):   # the common api.py's, in a generated module
    raise NotImplementedError


# ---- bpgen runtime: copied verbatim from here ----

import importlib.machinery as _machinery  # noqa: E402
import importlib.util as _util  # noqa: E402
import os as _os  # noqa: E402
import threading as _threading  # noqa: E402


def _load_extension():
    here = _os.path.dirname(_os.path.abspath(__file__))
    for suffix in _machinery.EXTENSION_SUFFIXES:
        path = _os.path.join(here, EXTENSION + suffix)
        if _os.path.exists(path):
            break
    else:
        try:
            from bpgen.backends.c.build import compile_c_file
        except ImportError:
            raise ImportError(f"{EXTENSION}: compiled extension not found next to "
                              f"{__file__}; run 'bpgen build' with --backend c") from None
        path = compile_c_file(_os.path.join(here, C_FILE), CDEF, EXTENSION, here)
    try:
        mod = _import_extension(path)
    except (ImportError, OSError):
        # a truncated or corrupted copy: rebuild it (from the cache, whose
        # copies are checked by their hash) and load again
        from bpgen.backends.c.build import compile_c_file
        path = compile_c_file(_os.path.join(here, C_FILE), CDEF, EXTENSION, here)
        mod = _import_extension(path)
    return mod.ffi, mod.lib


def _import_extension(path):
    spec = _util.spec_from_file_location(EXTENSION, path)
    mod = _util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ffi, lib = _load_extension()


#: the state of the BLAS threads, shared by every bpgen C module in the
#: process (they share one OpenBLAS, whose thread count is process-wide):
#: the first module loaded owns it and sets the default count
_SHARED_NAME = "_bpgen_blas_threads_1"


def _share_threads():
    """Point this module at the process's thread state; True if it is the
    first module, whose state that is."""
    import sys
    import types
    shared = sys.modules.get(_SHARED_NAME)
    if shared is None:
        shared = types.ModuleType(_SHARED_NAME, "bpgen: the BLAS thread state's owner")
        shared.lib = lib            # keeps the owner's extension (and its state) alive
        shared.state = int(ffi.cast("uintptr_t", lib.bpg_threads_state()))
        sys.modules[_SHARED_NAME] = shared
        return True
    lib.bpg_threads_share(ffi.cast("void *", shared.state))
    return False


def set_threads(n):
    """The number of threads the BLAS uses for a large call (its work: batch
    size times one sample's, at least 4e6); every other call runs with 1.
    Large calls take turns (docs/module-api.md, "Threads").  The count is
    process-wide (every bpgen C module shares one BLAS).  Default: the
    cores this process may use, unless $BPGEN_NUM_THREADS, $OMP_NUM_THREADS,
    $OPENBLAS_NUM_THREADS, $MKL_NUM_THREADS or threadpoolctl's limits say
    fewer (see _default_threads)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    lib.bpg_set_threads(min(n, 1024))


def get_threads():
    """The number of threads the BLAS uses for a large call (set_threads)."""
    return lib.bpg_get_threads()


def _cores():
    try:
        return max(len(_os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return _os.cpu_count() or 1


def _positive(name, text):
    """A thread variable's count: its first comma-separated entry (OpenMP's
    nesting list), None when it is not a positive integer (ignored, as the
    libraries reading it do)."""
    try:
        n = int(text.split(",")[0])
    except ValueError:
        return None
    return n if n >= 1 else None


def _threadpoolctl_limit():
    """The fewest threads threadpoolctl reports for another BLAS or OpenMP
    library in this process, when the user has imported threadpoolctl (its
    limits then show there), else None."""
    import sys
    if "threadpoolctl" not in sys.modules:
        return None
    try:
        counts = [info.get("num_threads") for info in sys.modules["threadpoolctl"].threadpool_info()
                  if info.get("user_api") in ("blas", "openmp")
                  and "scipy_openblas32" not in str(info.get("filepath", ""))]
    except Exception:               # threadpoolctl's own trouble: no limit
        return None
    counts = [c for c in counts if isinstance(c, int) and c >= 1]
    return min(counts) if counts else None


def _default_threads():
    """$BPGEN_NUM_THREADS if set; else the cores this process may use
    (os.sched_getaffinity), or fewer if $OMP_NUM_THREADS, $OPENBLAS_NUM_THREADS,
    $MKL_NUM_THREADS or threadpoolctl (when imported) say so."""
    text = _os.environ.get("BPGEN_NUM_THREADS", "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"BPGEN_NUM_THREADS: expected a positive integer, got {text!r}")
        return n
    n = _cores()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        limit = _positive(name, _os.environ.get(name, "").strip())
        if limit is not None:
            n = min(n, limit)
    limit = _threadpoolctl_limit()
    return n if limit is None else min(n, limit)


if _share_threads():
    set_threads(_default_threads())


#: cffi's type of x's data: the input kind's element type (real, or an
#: integer dtype such as int64, int64_t in C)
_X_PTR = _PTR if _X_DTYPE is None else f"{_X_DTYPE}_t[]"


def _pointers(args):
    """cffi pointers to a generated function's inputs: x first, then the rest."""
    fb = ffi.from_buffer
    return [fb(_X_PTR, args[0])] + [fb(_PTR, a) for a in args[1:]]


#: per generated function: total output size (a, b), meaning a*N + b elements
#: (with steps: any they depend on T: _layout)
_OUT_SIZE = {} if STEPS == "any" else {
    name: (sum(p[2] for p in layout), sum(p[3] for p in layout))
    for name, layout in _OUTPUTS.items()}


def _layout(name, t):
    """_OUTPUTS[name] at T = t (with steps: any its sizes depend on T):
    [(offset a, offset b, size a, size b, columns)]."""
    if t is None:
        return _OUTPUTS[name]
    return [tuple(_at(v, t) for v in p) for p in _OUTPUTS[name]]


def _split_steps(args):
    """(T, the arguments without it): with steps: any the API passes T after
    x, which the generated C functions take after N; else (None, args)."""
    if STEPS != "any":
        return None, args
    return args[1], [args[0], *args[2:]]


def _sizes(t):
    """The size arguments of a generated function: (N,), or (N, T)."""
    return () if t is None else (t,)


_LOCAL = _threading.local()


def _workspace(name, n, extra=0, t=None):
    """The calling thread's workspace, grown to the largest size asked for
    (one buffer for every function: none calls another); ``extra`` more
    elements after the function's own (``t``: T with steps: any)."""
    a, b = (_at(v, t) for v in _WS[name])
    return _buffer(a * n + b + extra)


def _buffer(need):
    """The calling thread's workspace of at least ``need`` elements."""
    need = max(need, 1)
    held = getattr(_LOCAL, "ws", None)
    if held is None or held[0].size < need:
        # aligned to 64 bytes (a cache line, an AVX-512 vector): at an
        # offset of 8 or 16 bytes the LSTM 4->8->2 Hessian took 1.15x as long
        raw = numpy.empty(need + 64 // DTYPE.itemsize, dtype=DTYPE)
        skip = (-raw.ctypes.data % 64) // DTYPE.itemsize
        arr = raw[skip:skip + need]
        held = _LOCAL.ws = (arr, ffi.from_buffer(_PTR, arr, require_writable=True))
    return held[1]


def release_workspace():
    """Free the calling thread's workspace (it is kept between calls)."""
    _LOCAL.ws = None
    _LOCAL.outs = None
    if hasattr(lib, "bpgf_release_workspace"):     # the C entry points' (fastcall.c)
        lib.bpgf_release_workspace()


#: the functions the C entry points also run (fastcall.c's order): through
#: bpg_entry_run (split.c), which splits a large call's batch across threads
_ENTRY_RUN = {"forward": 0, "loss": 1, "loss_and_grad": 2, "hvp": 3}


def _entry_run(name, n, args, out):
    """Run ``bpg_<name>`` as the C entry points do (the same thread rule,
    batch split and so the same bits); False when the extension has no such
    entry point."""
    entry = _ENTRY_RUN.get(name)
    if (entry is None or not hasattr(lib, "bpg_entry_run") or not lib.bpg_entry_have(entry)):
        return False
    need = lib.bpg_entry_ws(entry, n)
    if not need:
        return False
    ws = _buffer(need)
    # x, a sequence's masks (lengths), y (not forward's), the parameters, hvp's v
    nm = 0 if STEPS is None else 2 if _TRUNCATE else 1      # noqa: F821 (constants)
    mk = (numpy.concatenate([numpy.ravel(m) for m in args[1:1 + nm]]) if nm
          else None)
    ptrs = _pointers(args)
    k = len(PARAM_SHAPES)
    first = 1 + nm if name == "forward" else 2 + nm
    y = ffi.NULL if name == "forward" else ptrs[1 + nm]
    params = ffi.new(_PTR[:-2] + "*[]", ptrs[first:first + k])
    v = ffi.new(_PTR[:-2] + "*[]", ptrs[first + k:]) if name == "hvp" else ffi.NULL
    lib.bpg_entry_run(entry, n, ptrs[0], ffi.NULL if mk is None else ffi.from_buffer(_PTR, mk),
                      y, params, v,
                      ffi.from_buffer(_PTR, out, require_writable=True), ws,
                      _LOCAL.ws[0].size)
    return True


def _split_rule(rows=0, work=-1.0):
    """The batch split's rule for this module (runtime/split.c): the fewest
    samples per slice and the least work of a large call, as they were
    before; ``rows`` >= 1 and ``work`` >= 0 replace them (for tests and
    measurements: (1, 0) splits every call of 2 or more samples when the
    count is above 1).  (0, 0) when the module has no entry points."""
    if not hasattr(lib, "bpg_split_rule"):
        return 0, 0.0
    r, w = ffi.new("int64_t *", rows), ffi.new("double *", work)
    lib.bpg_split_rule(r, w)
    return int(r[0]), float(w[0])


def _split_together(least=0):
    """The least entries of a weight gradient a split call's slices make
    together (runtime/gemm_tn_out.c, split.c), as it was before; ``least``
    >= 1 replaces it (1: every one).  0 when the module has none."""
    if not hasattr(lib, "bpg_split_together"):
        return 0
    r = ffi.new("int64_t *", least)
    lib.bpg_split_together(r)
    return int(r[0])


def _split_products():
    """How many weight gradients split calls' slices made together (tests)."""
    return int(lib.bpg_split_products()) if hasattr(lib, "bpg_split_products") else 0


def _split_calls():
    """How many calls of this module ran split so far (for tests)."""
    return int(lib.bpg_split_calls()) if hasattr(lib, "bpg_split_calls") else 0


def _scratch_out(name, size):
    """The calling thread's output buffer of ``name``, kept between calls
    (grown as needed): a fresh one of megabytes costs its page faults on
    every call (the CNN's grad_terms: half of the call)."""
    held = getattr(_LOCAL, "outs", None)
    if held is None:
        held = _LOCAL.outs = {}
    out = held.get(name)
    if out is None or out.size < size:
        out = held[name] = numpy.empty(size, dtype=DTYPE)
    return out[:size]


def _call(name, n, args, scratch=False):
    """Run ``bpg_<name>``: the flat output buffer (fresh; with ``scratch``,
    the thread's buffer of ``name``, overwritten by its next call: for
    callers that read the outputs and return none of them).  The API has
    checked every input (shape, dtype, C-contiguity), so the C code stays in
    bounds."""
    t, args = _split_steps(args)
    if t is None:
        a, b = _OUT_SIZE[name]
    else:
        layout = _layout(name, t)
        a, b = sum(p[2] for p in layout), sum(p[3] for p in layout)
    size = max(a * n + b, 1)
    out = _scratch_out(name, size) if scratch else numpy.empty(size, dtype=DTYPE)
    if _entry_run(name, n, args, out):
        return out
    fb = ffi.from_buffer
    f, ws = getattr(lib, "bpg_" + name), _workspace(name, n, 0, t)
    large = lib.bpg_threads_enter(n * (N_PARAMS + _at(_WS[name][0], t)))
    try:
        f(n, *_sizes(t), *_pointers(args), fb(_PTR, out, require_writable=True), ws)
    finally:
        lib.bpg_threads_leave(large)
    return out


def _run(name, n, args, scratch=False):
    """The outputs of ``bpg_<name>`` as matrices (views of one buffer; with
    ``scratch`` the thread's kept buffer, see _call)."""
    out = _call(name, n, args, scratch)
    return [out[oa * n + ob:oa * n + ob + a * n + b].reshape(-1, cols)
            for oa, ob, a, b, cols in _layout(name, _split_steps(args)[0])]


#: the per-sample functions' flat output, a*N + b elements: every sample's
#: gradient; the loss and N norms; those and the clipped gradient
_PER_SAMPLE_OUT = {"per_sample_grads": (N_PARAMS, 0), "per_sample_grad_norms": (1, 1),
                   "clipped_grad": (1, 1 + N_PARAMS)}


def _per_sample_native(name, n, args, max_norm=None):
    """Run ``bpg_<name>`` (per_sample_grads, per_sample_grad_norms, or
    clipped_grad with ``max_norm``): grad_terms and what follows it in one C
    call.  Its flat output (_PER_SAMPLE_OUT: every sample's gradient, each
    parameter's (N, *shape) block in turn; or [loss, the N norms,
    (clipped_grad) the gradient in the flat parameter order]), or None when
    the module has no such function (an architecture whose summands stay in
    the Python runtime).  Its workspace beyond the memory limit is refused
    before it is allocated."""
    if name not in _WS:
        return None
    t, args = _split_steps(args)
    a, b = _WS[name] if t is None else (_at(v, t) for v in _WS[name])
    need = (a * n + b) * DTYPE.itemsize
    if need > MAX_RESULT_BYTES:
        raise ValueError(f"x: {name} on a batch of {n:,} samples needs {need:,} bytes of "
                         f"workspace, more than the limit of {MAX_RESULT_BYTES:,} bytes "
                         f"(MAX_RESULT_BYTES, or set $BPGEN_MAX_BYTES)")
    oa, ob = _PER_SAMPLE_OUT[name]
    out = numpy.empty(oa * n + ob, dtype=DTYPE)
    ws = _buffer(a * n + b)
    fb = ffi.from_buffer
    clip = () if max_norm is None else (max_norm,)
    large = lib.bpg_threads_enter(n * (N_PARAMS + a))
    try:
        getattr(lib, "bpg_" + name)(n, *_sizes(t), *_pointers(args), *clip,
                                    fb(_PTR, out, require_writable=True), ws)
    finally:
        lib.bpg_threads_leave(large)
    return out


def _run_flat(name, n, args, start=0):
    """The outputs from index ``start`` on, as one vector (no copy)."""
    out = _call(name, n, args)
    if not start:
        return out
    oa, ob = _layout(name, _split_steps(args)[0])[start][:2]
    return out[oa * n + ob:]


#: at most this many directions share one tangent pass of bpg_hessian_columns
#: (its products then have up to this many times the rows or columns)
HESSIAN_CHUNK = 64
#: and their tangents at most this many bytes (half of a core's L2 cache
#: here: the tangent pass's elementwise steps stream through them).  Measured
#: (docs/performance.md): the LSTM 4->8->2 Hessian (107 KB per direction) is
#: fastest with 4-8 directions at once, 1.3x slower with 64; the hmp of the
#: 64-128-128-10 MLP (320 KB per direction) with 1 (2: 1.05x, 16: 1.4x slower)
HESSIAN_CHUNK_BYTES = 2**19


def _columns_call(n, args, v, count, first=0):
    """bpg_hessian_columns for ``count`` directions (the rows of v, or the
    unit vectors e_first .. when v is None): a (count, N_PARAMS) array."""
    t, args = _split_steps(args)
    da, db = (_at(d, t) for d in _WS_DIR.get("hessian_columns", (0, 0)))
    per_dir = (da * n + db) * DTYPE.itemsize
    kc = max(1, min(count, HESSIAN_CHUNK,
                    HESSIAN_CHUNK_BYTES // per_dir if per_dir else count))
    out = numpy.empty((count, N_PARAMS), dtype=DTYPE)
    fb = ffi.from_buffer
    ws = _workspace("hessian_columns", n, kc * (da * n + db), t)
    large = lib.bpg_threads_enter(n * (N_PARAMS + _at(_WS["hessian_columns"][0], t))
                                  * (1 + count))
    try:
        lib.bpg_hessian_columns(n, *_sizes(t), *_pointers(args),
                                ffi.NULL if v is None else fb(_PTR, v),
                                fb(_PTR, out, require_writable=True), ws, first, count, kc)
    finally:
        lib.bpg_threads_leave(large)
    return out


_symmetrise_numpy = _symmetrise      # api.py's, replaced here


def _symmetrise(h, block=128):  # noqa: F811
    """(h + hᵀ)/2 in place (h square and C-contiguous) by the module's C
    helper (runtime/symmetrise.c: the same entries, in tiles that stay in
    the L1 cache; api.py's NumPy blocks took 10% of the transformer
    Hessian's call).  Replaces api.py's _symmetrise (defined before it in
    this module) when the module has the helper."""
    if not hasattr(lib, "bpg_symmetrise"):
        return _symmetrise_numpy(h, block)
    lib.bpg_symmetrise(h.shape[0], ffi.from_buffer(_PTR, h, require_writable=True))
    return h


def _hessian_columns(n, args, first, count):
    """Rows first .. first+count-1 of the Hessian (its columns, by symmetry),
    a (count, N_PARAMS) array; args: x, y and the parameters."""
    return _columns_call(n, args, None, count, first)


def _hessian_times(n, args, vt):
    """H·v for every row v of ``vt`` (k, N_PARAMS), as a (k, N_PARAMS) array:
    one forward and backward pass, then tangent passes over chunks of rows."""
    vt = numpy.require(vt, DTYPE, ["C_CONTIGUOUS", "ALIGNED"])
    return _columns_call(n, args, vt, vt.shape[0])
