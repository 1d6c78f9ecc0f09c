"""Per-sample gradients, their norms and DP-SGD's clipped gradient, from the
factors the generated ``grad_terms`` function returns: the loss, then every
parameter's data gradient as summands before their reduction over rows
(``_GRAD_TERMS``, derived in bpgen/derivation.py ``_grad_terms``):

* ``product``: Uᵀ·V (weights, conv kernels: a layer's input and delta);
* ``colsum``: 1ᵀ·D (biases, layernorm gains);
* ``scatter``: onehot(X)ᵀ·D (an embedding table);
* ``steps``: each step's rows summed over the samples (a position table).

A row belongs to one sample (``time`` layout: row t·N + n; ``sample``:
row n·r + p), so sample n's gradient is the same reduction over its own r
rows.  Per-sample gradients are formed as batched products (N, a, r)·(N, r, d);
norms either by forming them or, where the derivation chose so from the
shapes, from two r×r Gram matrices per sample, ‖U_nᵀV_n‖² = ⟨U_nU_nᵀ, V_nV_nᵀ⟩
(summands of one parameter as more rows: cross terms included); the
clipped gradient is Uᵀ·diag(c)·V, c each row's sample's clip factor.
One forward and one backward pass (the generated function), then these
products: no second backward pass, no loop over samples.

Normalisation: the generated deltas hold the batch loss's 1/N (and
1/T, or 1/ΣL with lengths) already, so sample n's gradient is N times the
sum over its rows, and the mean over n of the per-sample gradients is
loss_and_grad's gradient without the l2 term.

Copied verbatim into every generated module, after ``api.py``."""
import math

import numpy

from ._stub import (DTYPE, N_PARAMS, PARAM_SHAPES, _GRAD_TERMS, _per_sample_native,  # noqa: F401
                    _run)
from .api import (_check_fits, _check_params, _check_x, _check_y,  # noqa: F401
                  _finite_fast, _finite_or_blame, _grads_dict, _SLICES, _xs)

# ---- bpgen runtime: copied verbatim from here ----


def _terms_at(xm, n):
    """_GRAD_TERMS with a steps: any sequence's rows per sample ("T") set to
    x's step count (xm time-major, (T·N, ...)); a fixed T: _GRAD_TERMS itself."""
    if not _ROWS_IN_T:
        return _GRAD_TERMS
    t = xm.shape[0] // n
    return {key: entry if entry[0] == "unsupported" else
            (entry[0], entry[1], tuple(term[:3] + (t if term[3] == "T" else term[3],) + term[4:]
                                       for term in entry[2]))
            for key, entry in _GRAD_TERMS.items()}


_ROWS_IN_T = any(term[3] == "T" for entry in _GRAD_TERMS.values() if entry[0] != "unsupported"
                 for term in entry[2])


def _by_sample(arr, rows, layout, n):
    """A (rows·N, c) factor as (N, rows, c): sample n's rows (a view)."""
    c = arr.shape[1]
    if layout == "time":
        return arr.reshape(rows, n, c).transpose(1, 0, 2)
    return arr.reshape(n, rows, c)


def _row_sums(arr, rows, layout, n):
    """(N, c): every sample's sum of its rows of a (rows·N, c) factor, as a
    product with ones (NumPy's sum over a middle axis is ~10x slower)."""
    ones = numpy.ones(rows, dtype=DTYPE)
    if layout == "time":
        return (ones @ arr.reshape(rows, -1)).reshape(n, -1)
    return numpy.matmul(ones, arr.reshape(n, rows, -1))


def _row_weights(c, rows, layout):
    """(rows·N,): each row's weight c[its sample]."""
    return numpy.tile(c, rows) if layout == "time" else numpy.repeat(c, rows)


def _ids(outs, xm, i):
    """A scatter's row indices (token ids): x itself (i < 0) or an output."""
    ids = xm if i < 0 else numpy.rint(outs[i])
    return ids.reshape(-1).astype(numpy.int64)


def _left(outs, xm, i):
    """A product's U: x itself (i < 0) or an output."""
    return xm if i < 0 else outs[i]


def _term_grads(term, outs, xm, n):
    """(N, a, d): one summand's per-sample sums over rows (without the
    factor N)."""
    kind, iu, iv, rows, layout, size = term
    v = _by_sample(outs[iv], rows, layout, n)
    if kind == "product":
        u = _by_sample(_left(outs, xm, iu), rows, layout, n)
        if rows == 1:              # an outer product per sample
            return u[:, 0, :, None] * v[:, 0, None, :]
        return numpy.matmul(u.transpose(0, 2, 1), v)
    if kind == "colsum":
        return _row_sums(outs[iv], rows, layout, n)[:, None, :]
    if kind == "scatter":          # sample n's rows added at its ids
        ids = _by_sample(_ids(outs, xm, iu)[:, None], rows, layout, n)[:, :, 0]
        out = numpy.zeros((n * size, v.shape[2]), dtype=DTYPE)
        numpy.add.at(out, (numpy.arange(n)[:, None] * size + ids).ravel(),
                     v.reshape(-1, v.shape[2]))
        return out.reshape(n, size, -1)
    out = numpy.zeros((n, size, v.shape[2]), dtype=DTYPE)   # steps: row t -> P[t]
    out[:, :rows] = v
    return out


def _param_grads(entry, outs, xm, n):
    """(N, a, d): a parameter's per-sample data gradient, without the factor N."""
    _, shape, terms = entry
    total = numpy.zeros((n,) + shape, dtype=DTYPE) if not terms else None
    for term in terms:
        g = _term_grads(term, outs, xm, n)
        total = g if total is None else total + g
    return total


def _gram(a):
    """(N, r, r): every sample's Gram matrix of its rows, a: (N, r, c) (a
    strided view: each sample's rows are a BLAS operand as they lie)."""
    return numpy.matmul(a, a.transpose(0, 2, 1))


def _cached(cache, key, make):
    """cache[key], made once per call (a delta is shared by a layer's
    weight and bias, an lstm's Wx, Wh and b)."""
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
    return value


def _row_squares(cache, arr, i):
    """(rows,): the squared norm of every row of output i (or x)."""
    return _cached(cache, ("sq", i), lambda: numpy.multiply(arr, arr).sum(axis=1))


def _gram_squares(entry, outs, xm, n, cache):
    """(N,): ‖sample n's gradient‖² (without the factor N²) in the Gram form:
    a parameter's summands as more rows of one product."""
    _, _, terms = entry
    kind, iu, iv, rows, layout, _ = terms[0]
    if kind == "scatter":          # onehot(X_n) onehot(X_n)ᵀ: equal ids
        ids = _by_sample(_ids(outs, xm, iu)[:, None], rows, layout, n)
        gu = (ids == ids.transpose(0, 2, 1)).astype(DTYPE)
        return numpy.einsum("nij,nij->n", gu, _gram(_by_sample(outs[iv], rows, layout, n)))
    if len(terms) == 1 and rows == 1:    # one row: ‖u_n‖²·‖v_n‖²
        return _row_squares(cache, _left(outs, xm, iu), iu) * _row_squares(cache, outs[iv], iv)
    if len(terms) == 1:
        gu = _cached(cache, ("gram", iu, rows, layout),
                     lambda: _gram(_by_sample(_left(outs, xm, iu), rows, layout, n)))
        gv = _cached(cache, ("gram", iv, rows, layout),
                     lambda: _gram(_by_sample(outs[iv], rows, layout, n)))
        return numpy.einsum("nij,nij->n", gu, gv)
    u = numpy.concatenate([_by_sample(_left(outs, xm, t[1]), t[3], t[4], n) for t in terms],
                          axis=1)
    v = numpy.concatenate([_by_sample(outs[t[2]], t[3], t[4], n) for t in terms], axis=1)
    return numpy.einsum("nij,nij->n", _gram(u), _gram(v))


def _explicit_squares(entry, outs, xm, n, cache):
    """(N,): ‖sample n's gradient‖² (without the factor N²), the gradient formed."""
    terms = entry[2]
    kind, _, iv, rows, _, _ = terms[0]
    if len(terms) == 1 and kind == "colsum" and rows == 1:   # the delta's own row
        return _row_squares(cache, outs[iv], iv)
    g = _param_grads(entry, outs, xm, n).reshape(n, -1)
    return numpy.einsum("ij,ij->i", g, g)


def _norms(outs, xm, n, terms):
    """(N,): the Euclidean norm of every sample's gradient over all parameters
    (``terms``: _GRAD_TERMS at x's steps, _terms_at)."""
    sq = numpy.zeros(n, dtype=DTYPE)
    cache = {}
    for entry in terms.values():
        if entry[2]:
            form = _gram_squares if entry[0] == "gram" else _explicit_squares
            sq += form(entry, outs, xm, n, cache)
    return n * numpy.sqrt(numpy.maximum(sq, 0))


def _weighted_sum(entry, outs, xm, clip, weights):
    """A parameter's data gradient with every row weighted by its sample's
    clip[n], (a, d): Uᵀ·diag(w)·V and the like (clip = 1: loss_and_grad's,
    without l2).  ``weights``: the row weights and scaled factors made so
    far in this call."""
    _, shape, terms = entry
    total = None
    for kind, iu, iv, rows, layout, size in terms:
        w = clip if rows == 1 else _cached(weights, (rows, layout),
                                           lambda: _row_weights(clip, rows, layout))
        v = outs[iv]
        if kind == "product" and rows == 1:        # a dense layer: one row per sample
            u = _left(outs, xm, iu)
            wc = _cached(weights, "column", lambda: clip[:, None])
            part = (u * wc).T @ v if u.shape[1] < v.shape[1] else u.T @ (v * wc)
        elif kind == "product":
            u = _left(outs, xm, iu)
            # scale the narrower factor (once: a delta serves several weights)
            if u.shape[1] < v.shape[1]:
                part = _cached(weights, (iu, rows), lambda: u * w[:, None]).T @ v
            else:
                part = u.T @ _cached(weights, (iv, rows), lambda: v * w[:, None])
        elif kind == "colsum":
            part = (w @ v)[None, :]
        elif kind == "scatter":
            part = numpy.zeros(shape, dtype=DTYPE)
            numpy.add.at(part, _ids(outs, xm, iu), v * w[:, None])
        else:                                  # steps
            part = numpy.zeros(shape, dtype=DTYPE)
            scaled = (v * w[:, None]).reshape(rows, -1, v.shape[1])
            part[:rows] = numpy.matmul(numpy.ones(scaled.shape[1], dtype=DTYPE), scaled)
        total = part if total is None else total + part
    return numpy.zeros(shape, dtype=DTYPE) if total is None else total


def _terms_inputs(params, x, y, lengths):
    """Checked inputs, then the generated grad_terms function's outputs."""
    _supported()
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    return mats, xm, ym, n, [*xs, ym, *mats]


def _supported():
    """A NotImplementedError naming the parameter without a per-sample form
    (a gradient summand that is not a reduction over per-sample rows: the
    generator says which), if any; every layer bpgen has today has one."""
    for key, entry in _GRAD_TERMS.items():
        if entry[0] == "unsupported":
            raise NotImplementedError(f"per-sample gradients of {key}: {entry[2]}")


def _run_terms(args, n, xm, ym, mats):
    # the factors stay in the thread's kept buffer (C): nothing returned
    # here is a view of them
    outs = _run("grad_terms", n, args, scratch=True)
    if not math.isfinite(outs[0][0, 0]):
        _finite_or_blame(outs[0], xm, ym, mats)      # names the input to blame
    return outs


def _checked_norms(outs, xm, ym, mats, n, terms):
    """_norms, refused (naming the input) when one is not finite."""
    norms = _norms(outs, xm, n, terms).astype(DTYPE, copy=False)
    return norms if _finite_fast(norms) else _finite_or_blame(norms, xm, ym, mats)


def per_sample_grads(params, x, y, lengths=None):
    """Every sample's gradient: a dict like params whose arrays have a
    leading axis N.  Sample n's is the gradient of its term of the loss
    (its loss, a mean over its steps for ``steps: all``; with ``lengths``
    its real steps weighted L_n·N/ΣL, the batch being a mean over all real
    (sample, step) pairs), without the mean over samples and without l2, so
    that their mean over n plus the l2 gradient is loss_and_grad's (and
    truncated like it with bptt).  Refused, with a ValueError saying the
    bytes, before anything is allocated when N·N_PARAMS numbers cannot fit
    in MAX_RESULT_BYTES."""
    mats, xm, ym, n, args = _terms_inputs(params, x, y, lengths)
    _check_fits(f"per_sample_grads (N = {n:,} samples)", n * N_PARAMS)
    out = _per_sample_native("per_sample_grads", n, args)
    if out is not None:                # the C module: one call did it all
        out = _finite_or_blame(out, xm, ym, mats)
        return {key: out[n * a:n * b].reshape((n,) + shape) for key, a, b, shape in _SLICES}
    outs = _run_terms(args, n, xm, ym, mats)
    res = {}
    for key, entry in _terms_at(xm, n).items():
        g = _param_grads(entry, outs, xm, n)       # a fresh array: scaled in place
        g *= n
        res[key] = _finite_or_blame(
            numpy.ascontiguousarray(g.reshape((n,) + PARAM_SHAPES[key])), xm, ym, mats)
    return res


def per_sample_grad_norms(params, x, y, lengths=None):
    """(N,): the Euclidean norm, over all parameters, of every sample's
    gradient (per_sample_grads), computed without forming the per-sample
    gradients where the Gram form is cheaper (chosen per parameter at
    generation time: _GRAD_TERMS, bpgen show)."""
    mats, xm, ym, n, args = _terms_inputs(params, x, y, lengths)
    out = _per_sample_native("per_sample_grad_norms", n, args)
    if out is not None:                # the C module: one call did it all
        return _native_norms(out, xm, ym, mats, n)
    outs = _run_terms(args, n, xm, ym, mats)
    return _checked_norms(outs, xm, ym, mats, n, _terms_at(xm, n))


def _native_norms(out, xm, ym, mats, n):
    """The norms of a native call's output [loss, norms, ...], refused
    (naming the input) when the loss or a norm is not finite."""
    if not math.isfinite(out[0]):
        _finite_or_blame(out[:1], xm, ym, mats)
    norms = out[1:1 + n]
    return norms if _finite_fast(norms) else _finite_or_blame(norms, xm, ym, mats)


def _check_max_norm(max_norm):
    """``max_norm`` as a float: a real number (a Python or NumPy scalar, or a
    0-d array), positive and finite; anything else is a ValueError naming it."""
    if type(max_norm) is float and math.isfinite(max_norm) and max_norm > 0:
        return max_norm                 # the common case, without NumPy's calls
    kind = getattr(numpy.asarray(max_norm) if not isinstance(max_norm, (str, bytes))
                   else None, "dtype", None)
    if (isinstance(max_norm, bool) or kind is None or kind.kind not in "iuf"
            or numpy.ndim(max_norm) != 0):
        raise ValueError(f"max_norm: expected a positive finite number, got {max_norm!r}")
    value = float(max_norm)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_norm: expected a positive finite number, got {max_norm!r}")
    return value


def clipped_grad(params, x, y, max_norm, lengths=None):
    """DP-SGD's clipped gradient in one forward and one backward pass:
    (loss, grads, norms) with loss = loss(params, x, y) (l2 included),
    norms = per_sample_grad_norms, and grads (a dict like params) the mean
    over samples of each per-sample gradient scaled by min(1, max_norm /
    norm_n), without l2 (noise is the caller's): Uᵀ·diag(c)·V, c each
    row's sample's factor.  ``max_norm``: a positive finite number."""
    max_norm = _check_max_norm(max_norm)
    mats, xm, ym, n, args = _terms_inputs(params, x, y, lengths)
    out = _per_sample_native("clipped_grad", n, args, max_norm)
    if out is not None:                # the C module: one call did it all
        return float(out[0]), _grads_dict(out[1 + n:]), _native_norms(out, xm, ym, mats, n)
    outs = _run_terms(args, n, xm, ym, mats)
    terms = _terms_at(xm, n)
    norms = _checked_norms(outs, xm, ym, mats, n, terms)
    # min(1, max_norm / norm): a norm of 0 (or below the smallest normal) is not clipped
    tiny = numpy.finfo(DTYPE).tiny
    clip = numpy.minimum(1.0, max_norm / numpy.maximum(norms, tiny)).astype(DTYPE, copy=False)
    grads, weights = {}, {}
    for key, entry in terms.items():
        # finite: the norms are (a non-finite row would have made its norm so)
        grads[key] = numpy.ascontiguousarray(
            _weighted_sum(entry, outs, xm, clip, weights).reshape(PARAM_SHAPES[key]), dtype=DTYPE)
    return float(outs[0][0, 0]), grads, norms

