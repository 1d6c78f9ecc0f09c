"""Helpers the NumPy printers call from generated functions (stable
sigmoid/softplus, erf, broadcasting and block placement).  Copied verbatim
into every generated NumPy module."""
import math

import numpy

DTYPE = numpy.dtype("float64")   # the generated module's own DTYPE replaces this

# ---- bpgen runtime: copied verbatim from here ----


def _sigmoid(z):
    # 1 / (1 + exp(-z)) without overflow for large |z|
    return numpy.exp(-numpy.logaddexp(0, -z))


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


def _place_cols(a, start, total):
    out = numpy.zeros((a.shape[0], total), dtype=DTYPE)
    out[:, start:start + a.shape[1]] = a
    return out


def _place_rows(a, block, steps):
    n = a.shape[0]
    out = numpy.zeros((steps * n, a.shape[1]), dtype=DTYPE)
    out[block * n:(block + 1) * n] = a
    return out
