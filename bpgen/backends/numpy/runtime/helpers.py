"""Helpers the NumPy printers call from generated functions (stable
sigmoid/softplus, erf, broadcasting and block placement).  Copied verbatim
into every generated NumPy module."""
import math

import numpy

DTYPE = numpy.dtype("float64")   # the generated module's own DTYPE replaces this

# ---- bpgen runtime: copied verbatim from here ----

import threading as _threading  # noqa: E402

_LOCAL = _threading.local()


def _workspace(name, n, shapes):
    """The calling thread's arrays for the temporaries of generated function
    ``name`` at batch size n, one of each shape ``(a, b, cols)`` (a*n + b
    rows): made on the first call, then the same arrays for every call with
    this n and these shapes (with steps: any they change with T; a call's
    temporaries are dead when it returns; its outputs are fresh arrays).
    Reusing them spares allocating, and the operating system mapping in,
    fresh memory at every call."""
    held = getattr(_LOCAL, "ws", None)
    if held is None:
        held = _LOCAL.ws = {}
    got = held.get(name)
    if got is not None and got[0] == n and got[2] == shapes:
        return got[1]
    held.pop(name, None)
    sizes = [-(-(a * n + b) * c // 8) * 8 for a, b, c in shapes]   # 64-byte aligned slots
    buf = numpy.empty(max(sum(sizes), 1), dtype=DTYPE)
    views, off = [], 0
    for (a, b, c), size in zip(shapes, sizes):
        views.append(buf[off:off + (a * n + b) * c].reshape(a * n + b, c))
        off += size
    held[name] = (n, views, shapes)
    return views


def _sigmoid(z, out=None):
    # 1 / (1 + exp(-z)), into ``out`` when given: for z < -709 exp(-z)
    # overflows to inf and the result is 0, as it should (the generated
    # functions run with floating-point warnings off, see _run)
    e = numpy.negative(z, out=out)
    numpy.exp(e, out=e)
    e += 1
    return numpy.divide(1, e, out=e)


def _softplus(z):
    # log(1 + exp(z)) without overflow
    return numpy.logaddexp(0, z)


_erf_vec = numpy.vectorize(math.erf, otypes=[DTYPE])


def _erf(z):
    return _erf_vec(z)


def _where(cond, a, b):
    return numpy.where(cond, a, b).astype(DTYPE, copy=False)


def _full(value, shape):
    return numpy.broadcast_to(numpy.asarray(value, dtype=DTYPE), shape).copy()


def _batched(value, rows, k, cols):
    """An elementwise result over k directions, broadcast to (rows, k, cols)
    and seen as (rows*k, cols): the directions as extra columns."""
    value = numpy.asarray(value, dtype=DTYPE)
    if value.shape != (rows, k, cols):
        value = numpy.broadcast_to(value, (rows, k, cols)).copy()
    return value.reshape(rows * k, cols)


def _dirs_to_cols(block, rows, cols):
    """k directions of a (rows, cols) block, one per row of ``block`` (k,
    rows*cols) -> the (rows*k, cols) layout of _tangent_columns."""
    k = block.shape[0]
    return numpy.ascontiguousarray(
        block.reshape(k, rows, cols).transpose(1, 0, 2), dtype=DTYPE).reshape(rows * k, cols)


def _unit_dirs(i0, k, rows, cols):
    """The (rows, cols) blocks of the unit vectors e_i0 .. e_(i0+k-1) (zero
    where i is outside the block) in the (rows*k, cols) layout."""
    out = numpy.zeros((rows * k, cols), dtype=DTYPE)
    for d in range(max(0, -i0), min(k, rows * cols - i0)):
        i = i0 + d
        out[(i // cols) * k + d, i % cols] = 1
    return out


def _cols_to_dirs(x, rows, cols):
    """The inverse of _dirs_to_cols: (rows*k, cols) -> (k, rows*cols)."""
    k = x.shape[0] // rows
    return x.reshape(rows, k, cols).transpose(1, 0, 2).reshape(k, rows * cols)


def _place_cols(a, start, total):
    out = numpy.zeros((a.shape[0], total), dtype=DTYPE)
    out[:, start:start + a.shape[1]] = a
    return out


def _place_rows(a, block, steps):
    n = a.shape[0]
    out = numpy.zeros((steps * n, a.shape[1]), dtype=DTYPE)
    out[block * n:(block + 1) * n] = a
    return out


def _pad_rows(a, rows):
    """``a`` followed by zero rows up to ``rows`` (steps: any: the T rows of
    a position table's gradient in its T_max)."""
    out = numpy.zeros((rows, a.shape[1]), dtype=DTYPE)
    out[:a.shape[0]] = a
    return out


def _gather(a, idx, n, rows, cols):
    # per sample, entries idx of the input block; -1 reads an appended zero
    flat = a.reshape(n, -1)
    if idx.size and idx.min() < 0:
        flat = numpy.concatenate([flat, numpy.zeros((n, 1), dtype=DTYPE)], axis=1)
    return flat[:, idx].reshape(n * rows, cols)


def _scatter(g, idx, n, s_out, cols):
    # the adjoint of _gather: each output entry sums the inputs pointing at it
    keep = idx >= 0
    pos = (numpy.arange(n)[:, None] * s_out + idx[keep][None, :]).ravel()
    out = numpy.bincount(pos, weights=g.reshape(n, -1)[:, keep].ravel(), minlength=n * s_out)
    return out.astype(DTYPE, copy=False).reshape(-1, cols)


def _take_argmax(sel, val):
    # per row, val where sel has its first maximum
    return val[numpy.arange(sel.shape[0]), sel.argmax(axis=1)][:, None]


def _put_argmax(sel, val):
    out = numpy.zeros(sel.shape, dtype=DTYPE)
    out[numpy.arange(sel.shape[0]), sel.argmax(axis=1)] = val[:, 0]
    return out


# k directions at once (hessian_columns): a per-sample variable of `rows`
# rows a sample is stored (NB*rows*K, cols), each row's K directions together


def _by_direction(a, nb, k, rows, cols):
    # as (NB*K, rows*cols): one block per sample and direction
    return a.reshape(nb, rows, k, cols).transpose(0, 2, 1, 3).reshape(nb * k, rows * cols)


def _by_row(a, nb, k, rows, cols):
    # the inverse of _by_direction: (NB*K*rows, cols) -> (NB*rows*K, cols)
    return a.reshape(nb, k, rows, cols).transpose(0, 2, 1, 3).reshape(nb * rows * k, cols)


def _take_argmax_dirs(sel, val, k):
    # sel (R, C); val (R*K, C), row r's K directions together: each at sel's first maximum
    best = sel.argmax(axis=1)
    return numpy.take_along_axis(val.reshape(-1, k, sel.shape[1]), best[:, None, None],
                                 axis=2).reshape(-1, 1)


def _put_argmax_dirs(sel, val, k):
    # the adjoint of _take_argmax_dirs: (R*K, C), val at sel's first maximum, zeros elsewhere
    out = numpy.zeros((sel.shape[0], k, sel.shape[1]), dtype=DTYPE)
    out[numpy.arange(sel.shape[0])[:, None], numpy.arange(k)[None, :],
        sel.argmax(axis=1)[:, None]] = val.reshape(-1, k)
    return out.reshape(-1, sel.shape[1])
