"""The exact Hessian of a network of dense layers, assembled from its
matrix-form structure (Kronecker blocks per layer pair plus the
commutation-type delta terms) out of the per-sample quantities the generated
``curvature`` function computes.  Copied verbatim into every generated
module, after ``api.py``."""
import math

import numpy

from ._stub import (DTYPE, LOSS, N_PARAMS, PARAM_SHAPES, _CURV_LAYERS,  # noqa: F401
                    _CURV_LOSS, _L2, _L2_KEYS)

_SLICES = []   # the generated module's (key, start, stop, shape), from api.py

# ---- bpgen runtime: copied verbatim from here ----


def _loss_hessian(outs, n):
    """Per-sample Hessian of the loss w.r.t. the network output, (n, K, K)."""
    c = outs[_CURV_LOSS]
    if LOSS == "softmax_cross_entropy":     # Hessian of log-sum-exp: diag(p) - p pᵀ
        h = -numpy.einsum("ni,nj->nij", c, c)
        h[:, numpy.arange(c.shape[1]), numpy.arange(c.shape[1])] += c
    else:                                   # elementwise loss: diag(l'')
        h = numpy.zeros((n, c.shape[1], c.shape[1]))
        h[:, numpy.arange(c.shape[1]), numpy.arange(c.shape[1])] = c
    return h / n


def _structured_hessian(mats, outs, n, within_layers=False):
    """H from its block structure, per sample n (row-vector convention
    z_k = a_(k-1) W_k + b_k):

      A_L = d2l/dz_L2;  A_k = D_k W_(k+1) A_(k+1) W_(k+1)ᵀ D_k + diag(f''(z_k) ⊙ q_k)
      M_kl = dz_l/dz_k · A_l  (k <= l),  J_kl = da_(l-1)/dz_k
      H[W_k(p,q), W_l(i,j)] = Σ_n a_k,p (a_l,i M_kl[q,j] + J_kl[q,i] δ_l,j)

    the first term a sum of Kronecker products, the second (k < l) the
    commutation-type term a pure Kronecker sum misses.  ``within_layers``
    assembles only the blocks with k == l (the rest stays zero)."""
    w = {key: numpy.asarray(m, dtype=numpy.float64) for key, m in zip(PARAM_SHAPES, mats)}
    layers = [(wk, bk, outs[i], outs[d1], outs[d2], outs[q], outs[dl])
              for wk, bk, i, d1, d2, q, dl in _CURV_LAYERS]
    L = len(layers)
    # A_k by the backward recursion
    A = [None] * L
    A[-1] = _loss_hessian(outs, n)
    _, _, _, d1, d2, q, _ = layers[-1]
    A[-1] = d1[:, :, None] * A[-1] * d1[:, None, :] + _diag3(d2 * q)
    for k in range(L - 2, -1, -1):
        wn = w[layers[k + 1][0]]
        _, _, _, d1, d2, q, _ = layers[k]
        inner = numpy.einsum("ia,nab,jb->nij", wn, A[k + 1], wn)
        A[k] = d1[:, :, None] * inner * d1[:, None, :] + _diag3(d2 * q)
    offset = {key: a for key, a, _, _ in _SLICES}
    h = numpy.zeros((N_PARAMS, N_PARAMS))
    for k in range(L):
        wk, bk, ak, d1k = layers[k][0], layers[k][1], layers[k][2], layers[k][3]
        jz = numpy.broadcast_to(numpy.eye(d1k.shape[1]), (n,) + (d1k.shape[1],) * 2)
        ja = None
        for l in range(k, k + 1 if within_layers else L):  # noqa: E741
            wl, bl, al, _, _, _, dl = layers[l]
            if l > k:
                # J_kl = da_(l-1)/dz_k, then dz_l/dz_k = J_kl W_l
                prev_d1 = layers[l - 1][3]
                ja = jz * prev_d1[:, None, :]
                jz = numpy.einsum("nqi,ij->nqj", ja, w[wl])
            m = numpy.einsum("nqi,nij->nqj", jz, A[l])
            pk, ck = ak.shape[1], d1k.shape[1]
            pl, cl = al.shape[1], dl.shape[1]
            # Σ_n over samples as one matrix product per block: (p) x (q, i, j)
            qij = numpy.einsum("ni,nqj->nqij", al, m)
            if ja is not None:       # the commutation-type term
                qij = qij + numpy.einsum("nqi,nj->nqij", ja, dl)
            hww = (ak.T @ qij.reshape(n, -1)).reshape(pk * ck, pl * cl)
            hwb = ak.T @ m.reshape(n, -1)
            hbw = qij.sum(axis=0)
            hbb = m.sum(axis=0)
            ow, ob, vw, vb = offset[wk], offset[bk], offset[wl], offset[bl]
            blocks = ((ow, vw, hww), (ow, vb, hwb.reshape(pk * ck, cl)),
                      (ob, vw, hbw.reshape(ck, pl * cl)), (ob, vb, hbb))
            for r0, c0, blk in blocks:
                h[r0:r0 + blk.shape[0], c0:c0 + blk.shape[1]] = blk
                if l > k:
                    h[c0:c0 + blk.shape[1], r0:r0 + blk.shape[0]] = blk.T
    if _L2:
        for key in _L2_KEYS:
            a0 = offset[key]
            size = math.prod(PARAM_SHAPES[key])
            h[a0:a0 + size, a0:a0 + size] += _L2 * numpy.eye(size)
    return numpy.ascontiguousarray(((h + h.T) / 2).astype(DTYPE))


def _diag3(v):
    """(n, k) -> (n, k, k) with v on the diagonals."""
    out = numpy.zeros(v.shape + (v.shape[1],))
    out[:, numpy.arange(v.shape[1]), numpy.arange(v.shape[1])] = v
    return out
