"""The exact diagonal of the Hessian of a network of dense layers, out of
the per-sample quantities the generated ``curvature`` function computes
(layer inputs a, f'(z), f''(z), q = dL/da, delta = dL/dz and the loss
curvature), without any block: the curvature A_k of every layer kept as
square-root factors (the loss curvature's, propagated back, and the f''·q
residuals), as BackPACK does, so memory grows like N·(layer width)·(factor
columns), not like blocks.  (The full Hessian and its diagonal blocks are
generated code: the ``hessian`` and ``hessian_blocks`` assemblies.)

Copied verbatim into every generated module, after ``api.py``."""
import math

import numpy

from ._stub import (DTYPE, N_PARAMS, PARAM_SHAPES, _CURV_FORM, _CURV_LAYERS,  # noqa: F401
                    _CURV_LOSS, _L2, _L2_KEYS)

_SLICES = []   # the generated module's (key, start, stop, shape), from api.py

# ---- bpgen runtime: copied verbatim from here ----


def _layers(mats, outs):
    """[(W key, b key, W, input a, f'(z), f''(z), q, delta)] in float64."""
    w = dict(zip(PARAM_SHAPES, mats))
    return [(wk, bk, numpy.asarray(w[wk], dtype=numpy.float64), outs[i], outs[d1], outs[d2],
             outs[q], outs[dl]) for wk, bk, i, d1, d2, q, dl in _CURV_LAYERS]


def _loss_factor(outs, n):
    """S with S Sᵀ = the per-sample Hessian of the loss w.r.t. the output
    (divided by n, the mean): (n, K, K)."""
    c = outs[_CURV_LOSS]
    k = c.shape[1]
    root = numpy.sqrt(numpy.maximum(c, 0) / n)
    if _CURV_FORM == "softmax":     # diag(p) - p pᵀ = (D - p sᵀ)(D - s pᵀ), s = √p
        s = -c[:, :, None] * root[:, None, :]
        s[:, numpy.arange(k), numpy.arange(k)] += root
        return s
    out = numpy.zeros((n, k, k))    # the "diagonal" form: diag(l'')
    out[:, numpy.arange(k), numpy.arange(k)] = root
    return out


def _structured_diag(mats, outs, n):
    """The exact diagonal of the Hessian, a vector in the flat order, from
    square-root factors of every A_k: A_(k+1) = F σ Fᵀ + diag(r_(k+1)) gives
    diag(A_k) = Σ_c σ_c (D_k W F)²_c + D_k² (W∘W) r_(k+1) + r_k, and only
    then does r_(k+1) become factor columns D_k W diag(√|r|) (with the
    signs σ) for the layers further down.  H[W_k(p,q)] = Σ_n a_p² A_k[q,q]."""
    layers = _layers(mats, outs)
    out = numpy.zeros(N_PARAMS, dtype=numpy.float64)
    offset = {key: a for key, a, _, _ in _SLICES}
    fac, sig, pend = _loss_factor(outs, n), None, None
    for k in range(len(layers) - 1, -1, -1):
        wk, bk, _, ak, d1, d2, q, _ = layers[k]
        if k == len(layers) - 1:
            fac = d1[:, :, None] * fac
            sig = numpy.ones((n, fac.shape[2]))
            diag = numpy.einsum("nuc,nc->nu", fac * fac, sig)
        else:
            wn = layers[k + 1][2]
            fac = d1[:, :, None] * (wn @ fac)
            diag = (numpy.einsum("nuc,nc->nu", fac * fac, sig)
                    + d1 * d1 * (pend @ (wn * wn).T))
            if k > 0 and pend.any():
                cols = d1[:, :, None] * (wn[None] * numpy.sqrt(numpy.abs(pend))[:, None, :])
                fac = numpy.concatenate([fac, cols], axis=2)
                sig = numpy.concatenate([sig, numpy.sign(pend)], axis=1)
        pend = d2 * q
        diag += pend
        size = math.prod(PARAM_SHAPES[wk])
        out[offset[wk]:offset[wk] + size] = ((ak * ak).T @ diag).ravel()
        out[offset[bk]:offset[bk] + diag.shape[1]] = diag.sum(axis=0)
    if _L2:
        for key in _L2_KEYS:
            out[offset[key]:offset[key] + math.prod(PARAM_SHAPES[key])] += _L2
    return out.astype(DTYPE)
