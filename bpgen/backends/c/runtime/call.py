"""How the C module's API calls the compiled functions: one generic call
path for every entry point (inputs as pointers, one flat output buffer, one
workspace).  Copied verbatim into every generated C wrapper."""
import numpy

DTYPE = numpy.dtype("float64")   # the generated module's constants replace these
EXTENSION = ""
CDEF = ""
C_FILE = ""
_PTR = "double[]"
_WS = {}
_OUTPUTS = {}

# ---- bpgen runtime: copied verbatim from here ----

import importlib.machinery as _machinery  # noqa: E402
import importlib.util as _util  # noqa: E402
import os as _os  # noqa: E402


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
    spec = _util.spec_from_file_location(EXTENSION, path)
    mod = _util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib


ffi, lib = _load_extension()


def set_threads(n):
    """The number of threads the BLAS may use for large matrix products
    (1 unless set here or by the environment variable BPGEN_NUM_THREADS)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    lib.bpg_set_threads(n)


def _threads_from_environment():
    text = _os.environ.get("BPGEN_NUM_THREADS", "").strip() or "1"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"BPGEN_NUM_THREADS: expected a positive integer, got {text!r}") from None


set_threads(_threads_from_environment())


def _call(name, n, args):
    """Run ``bpg_<name>``: the flat output buffer (every input has been
    checked by the API before, so the C code stays in bounds)."""
    layout = _OUTPUTS[name]
    total = sum(a * n + b for _, _, a, b, _ in layout)
    out = numpy.empty(max(total, 1), dtype=DTYPE)
    wa, wb = _WS[name]
    ws = numpy.empty(max(wa * n + wb, 1), dtype=DTYPE)
    getattr(lib, "bpg_" + name)(
        n, *[ffi.from_buffer(_PTR, numpy.ascontiguousarray(a)) for a in args],
        ffi.from_buffer(_PTR, out, require_writable=True),
        ffi.from_buffer(_PTR, ws, require_writable=True))
    return out, layout


def _run(name, n, args):
    """The outputs of ``bpg_<name>`` as matrices (views of one buffer)."""
    out, layout = _call(name, n, args)
    return [out[oa * n + ob:oa * n + ob + a * n + b].reshape(-1, cols)
            for oa, ob, a, b, cols in layout]


def _run_flat(name, n, args, start=0):
    """The outputs from index ``start`` on, as one vector (no copy)."""
    out, layout = _call(name, n, args)
    total = sum(a * n + b for _, _, a, b, _ in layout)
    first = layout[start][0] * n + layout[start][1] if start < len(layout) else total
    return out[first:total]
