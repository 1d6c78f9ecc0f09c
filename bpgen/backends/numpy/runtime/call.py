"""How the NumPy module's API calls its generated functions (``_forward``,
``_loss_and_grad``, ...): parameters as matrices in, a list of matrices out.
Copied verbatim into every generated NumPy module."""
import numpy

DTYPE = numpy.dtype("float64")   # the generated module's own DTYPE replaces this
N_PARAMS = 0
PARAM_SHAPES = {}
_TANGENT_BYTES = (0, 0)          # the generated module's own replaces this


def _hvp_rows(n, args, first, count):   # the common api.py's, in a generated module
    raise NotImplementedError


_LOCAL = None                    # helpers.py's, in a generated module
STEPS = None                     # the generated module's constants replace these


def _at(value, t):               # the common api.py's, in a generated module
    raise NotImplementedError

_unit_dirs = _dirs_to_cols = _cols_to_dirs = None   # helpers.py's, likewise


# ---- bpgen runtime: copied verbatim from here ----

def release_workspace():
    """Free the calling thread's workspaces (kept between calls, one per
    generated function, for the batch size it last ran at)."""
    _LOCAL.ws = None


def _mats(arrs):
    # (with steps: any, T, an int after x, is passed as it is)
    return [a if type(a) is int or a.ndim == 2 else a.reshape(1, -1) if a.ndim == 1 else a.reshape(a.shape[0], -1)
            for a in arrs]


def _run(name, n, args, scratch=False):
    """Run generated function ``name`` on its inputs (x, y, parameters, v;
    vectors become 1-row matrices); its outputs as a list of matrices.
    (``scratch``: the C backend's; the outputs here are always fresh.)"""
    # like the C backend, silent on overflow (e.g. the unused branch of elu at
    # -1e4): results are checked for NaN/inf by the API (_finite_or_blame)
    with numpy.errstate(all="ignore"):
        outs = globals()["_" + name](*_mats(args))
    return list(outs) if isinstance(outs, tuple) else [outs]


def _per_sample_native(name, n, args, max_norm=None):
    """None: the NumPy module's per-sample functions are the runtime's own
    (per_sample.py); the C module runs them in one generated call."""
    return None


def _run_flat(name, n, args, start=0):
    """The outputs from index ``start`` on, one vector in C order: the
    vector the generated function wrote them to, one after the other, when
    it did (no copy)."""
    outs = _run(name, n, args)
    base = outs[0].base
    if base is not None and base.ndim == 1 and all(o.base is base for o in outs) and (
            base.size == sum(o.size for o in outs)):
        return base[sum(o.size for o in outs[:start]):]
    return numpy.concatenate([o.ravel() for o in outs[start:]])


#: at most this many directions share one tangent pass of _tangent_columns
#: (each op then runs once for all of them: NumPy's cost per call is spread)
HESSIAN_CHUNK = 64
#: and their tangents at most about this many bytes (measured on the LSTM
#: 4->8->2 Hessian, 276 KB per direction: 113 ms with 4 at once, 44 with 16,
#: 38 with 64, 51 with all 434)
HESSIAN_CHUNK_BYTES = 2**24


def _chunk(n, count, t=None):
    per_dir = _at(_TANGENT_BYTES[0], t) * n + _at(_TANGENT_BYTES[1], t)
    return max(1, min(count, HESSIAN_CHUNK, HESSIAN_CHUNK_BYTES // max(per_dir, 1)))


def _tangent_call(n, args, vt, first, count):
    """H·v for count directions (the rows of vt, or the unit vectors e_first
    .. when vt is None), a (count, N_PARAMS) array: the generated
    _columns_head once, then _tangent_columns over chunks of directions
    (_columns_drive); None when the module has no _tangent_columns (a layer
    without a rule for many directions at once)."""
    tangent = globals().get("_tangent_columns")
    if tangent is None:
        return None
    mats = _mats(args)
    with numpy.errstate(all="ignore"):
        head = globals()["_columns_head"](*mats)
        head = head if isinstance(head, tuple) else () if head is None else (head,)
        t = mats[1] if STEPS == "any" else None
        return _columns_drive(tangent, mats, head, vt, first, count, _chunk(n, count, t))


def _columns_drive(tangent, mats, head, vt, first, count, kc):
    """The chunk loop of hessian_columns: for kc directions at a time, their
    blocks in the layout of the tangent pass (each (rows, cols) block of v
    as (rows*K, cols), the directions as extra columns: rows j0 .. of vt, or
    the unit vectors e_(first + j0) ..), the generated ``tangent`` pass on
    them (inputs ``mats``: x, a sequence's masks, y, the parameters; then
    ``head``, what the shared pass computed), and its blocks of H·v into rows
    j0 .. of the (count, P) result.  Block i of v and of H·v has the shape of
    parameter i (the i-th of the last len(PARAM_SHAPES) mats) and follows the
    blocks before it (the flat order)."""
    blocks, at = [], 0
    for m in mats[len(mats) - len(PARAM_SHAPES):]:
        rows, cols = m.shape
        blocks.append((rows, cols, at))
        at += rows * cols
    out = numpy.empty((count, at), dtype=DTYPE)
    for j0 in range(0, count, kc):
        k = min(kc, count - j0)
        if vt is None:
            dirs = [_unit_dirs(first + j0 - a, k, r, c) for r, c, a in blocks]
        else:
            dirs = [_dirs_to_cols(vt[j0:j0 + k, a:a + r * c], r, c) for r, c, a in blocks]
        res = tangent(*mats, *head, *dirs, k)
        res = res if isinstance(res, tuple) else (res,)
        for x, (r, c, a) in zip(res, blocks):
            out[j0:j0 + k, a:a + r * c] = _cols_to_dirs(x, r, c)
    return out


def _hessian_columns(n, args, first, count):
    """Rows first .. first+count-1 of the Hessian: the forward and backward
    pass once and the tangent pass over chunks of directions at once, else
    one hvp each."""
    rows = _tangent_call(n, args, None, first, count)
    return _hvp_rows(n, args, first, count) if rows is None else rows


def _hessian_times(n, args, vt):
    """H·v for every row v of ``vt`` (k, N_PARAMS), as a (k, N_PARAMS)
    array, or None (the API then takes one hvp per direction)."""
    return _tangent_call(n, args, vt, 0, vt.shape[0])
