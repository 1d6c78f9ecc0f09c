"""How the NumPy module's API calls its generated functions (``_forward``,
``_loss_and_grad``, ...): parameters as matrices in, a list of matrices out.
Copied verbatim into every generated NumPy module."""
import numpy

DTYPE = numpy.dtype("float64")   # the generated module's own DTYPE replaces this
N_PARAMS = 0
_TANGENT_BYTES = (0, 0)          # the generated module's own replaces this


def _hvp_rows(n, args, first, count):   # the common api.py's, in a generated module
    raise NotImplementedError


_LOCAL = None                    # helpers.py's, in a generated module


# ---- bpgen runtime: copied verbatim from here ----

def release_workspace():
    """Free the calling thread's workspaces (kept between calls, one per
    generated function, for the batch size it last ran at)."""
    _LOCAL.ws = None


def _mats(arrs):
    return [a if a.ndim == 2 else a.reshape(1, -1) if a.ndim == 1 else a.reshape(a.shape[0], -1)
            for a in arrs]


def _run(name, n, args):
    """Run generated function ``name`` on its inputs (x, y, parameters, v;
    vectors become 1-row matrices); its outputs as a list of matrices."""
    # like the C backend, silent on overflow (e.g. the unused branch of elu at
    # -1e4): results are checked for NaN/inf by the API (_finite_or_blame)
    with numpy.errstate(all="ignore"):
        outs = globals()["_" + name](*_mats(args))
    return list(outs) if isinstance(outs, tuple) else [outs]


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


def _chunk(n, count):
    per_dir = _TANGENT_BYTES[0] * n + _TANGENT_BYTES[1]
    return max(1, min(count, HESSIAN_CHUNK, HESSIAN_CHUNK_BYTES // max(per_dir, 1)))


def _tangent_call(n, args, vt, first, count):
    """_tangent_columns for count directions (the rows of vt, or the unit
    vectors e_first .. when vt is None), a (count, N_PARAMS) array; None
    when the module has no _tangent_columns (a layer without a rule for
    many directions at once)."""
    fn = globals().get("_tangent_columns")
    if fn is None:
        return None
    with numpy.errstate(all="ignore"):
        return fn(*_mats(args), vt, first, count, _chunk(n, count))


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
