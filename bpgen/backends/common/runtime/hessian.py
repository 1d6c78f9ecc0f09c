"""The exact Hessian of a network of dense layers from its matrix-form
structure, out of the per-sample quantities the generated ``curvature``
function computes (layer inputs a, f'(z), f''(z), q = dL/da, delta = dL/dz
and the loss curvature):

* the full Hessian: Kronecker blocks per layer pair plus the
  commutation-type delta terms, each block one matrix product over the
  samples, written straight into the output (no 4-D temporaries);
* one layer's diagonal block, on its own;
* the exact diagonal without any block: the curvature A_k of every layer
  kept as square-root factors (the loss curvature's, propagated back, and
  the f''·q residuals), as BackPACK does, so memory grows like
  N·(layer width)·(factor columns), not like blocks.

Copied verbatim into every generated module, after ``api.py``."""
import math

import numpy

from ._stub import (DTYPE, LOSS, N_PARAMS, PARAM_SHAPES, _CURV_LAYERS,  # noqa: F401
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
    if LOSS == "softmax_cross_entropy":     # diag(p) - p pᵀ = (D - p sᵀ)(D - s pᵀ), s = √p
        s = -c[:, :, None] * root[:, None, :]
        s[:, numpy.arange(k), numpy.arange(k)] += root
        return s
    out = numpy.zeros((n, k, k))            # elementwise loss: diag(l'')
    out[:, numpy.arange(k), numpy.arange(k)] = root
    return out


def _curvatures(layers, outs, n):
    """Per-sample A_k = d2L/dz_k2, (n, u_k, u_k), by the backward recursion
    A_k = D_k W_(k+1) A_(k+1) W_(k+1)ᵀ D_k + diag(f''(z_k) ⊙ q_k)."""
    s = _loss_factor(outs, n)
    a = s @ s.transpose(0, 2, 1)
    curv = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        d1, r = layers[k][4], layers[k][5] * layers[k][6]
        if k < len(layers) - 1:
            wn = layers[k + 1][2]
            a = wn @ a @ wn.T
        a = d1[:, :, None] * a * d1[:, None, :]
        idx = numpy.arange(a.shape[1])
        a[:, idx, idx] += r
        curv[k] = (a + a.transpose(0, 2, 1)) / 2     # symmetric to the last bit
    return curv


def _put_pair(h, lay_k, lay_l, m, ja, offset):
    """The blocks of H between the parameters of layers k <= l:
    H[W_k(p,q), W_l(i,j)] = Σ_n a_k,p (a_l,i M[q,j] + J[q,i] δ_l,j) with
    M = dz_l/dz_k · A_l, J = da_(l-1)/dz_k (None when k == l), and the biases
    as weights of a constant input 1 (no J term where b_l is the column).
    Each block is one product over the samples, written once into ``h``
    through a 4-D view (rows (p, q), columns (i, j)) and once mirrored."""
    wk, bk, _, ak, _ = lay_k[:5]
    wl, bl, _, al, _, _, _, dl = lay_l
    n, pk = ak.shape
    ck, pl, cl = m.shape[1], al.shape[1], m.shape[2]
    ow, ob, vw, vb = offset[wk], offset[bk], offset[wl], offset[bl]
    m2 = m.reshape(n, ck * cl)
    # W-W: rows (p, i), columns (q, j) of one product over samples
    ww = ((ak[:, :, None] * al[:, None, :]).reshape(n, pk * pl).T @ m2).reshape(pk, pl, ck, cl)
    bw = (al.T @ m2).reshape(pl, ck, cl)
    if ja is not None:                       # the commutation-type term
        t2 = (ak[:, :, None] * dl[:, None, :]).reshape(n, pk * cl)
        ww += (t2.T @ ja.reshape(n, ck * pl)).reshape(pk, cl, ck, pl).transpose(0, 3, 2, 1)
        bw += (ja.reshape(n, ck * pl).T @ dl).reshape(ck, pl, cl).transpose(1, 0, 2)
    rows_w, rows_b = slice(ow, ow + pk * ck), slice(ob, ob + ck)
    cols_w, cols_b = slice(vw, vw + pl * cl), slice(vb, vb + cl)
    h[rows_w, cols_w].reshape(pk, ck, pl, cl)[...] = ww.transpose(0, 2, 1, 3)
    h[rows_w, cols_b] = (ak.T @ m2).reshape(pk * ck, cl)
    h[rows_b, cols_w].reshape(ck, pl, cl)[...] = bw.transpose(1, 0, 2)
    h[rows_b, cols_b] = m.sum(axis=0)
    if ja is None:        # diagonal blocks: symmetric to the last bit, then mirrored
        for rr in (rows_w, rows_b):
            h[rr, rr] = (h[rr, rr] + h[rr, rr].T) / 2
        h[rows_b, rows_w] = h[rows_w, rows_b].T
    else:
        h[cols_w, rows_w] = h[rows_w, cols_w].T
        h[cols_b, rows_w] = h[rows_w, cols_b].T
        h[cols_w, rows_b] = h[rows_b, cols_w].T
        h[cols_b, rows_b] = h[rows_b, cols_b].T


def _structured_hessian(mats, outs, n):
    """The full Hessian (N_PARAMS, N_PARAMS) from its block structure."""
    layers = _layers(mats, outs)
    curv = _curvatures(layers, outs, n)
    offset = {key: a for key, a, _, _ in _SLICES}
    h = numpy.empty((N_PARAMS, N_PARAMS), dtype=DTYPE)
    for k, lay_k in enumerate(layers):
        jz, ja = None, None
        for l in range(k, len(layers)):  # noqa: E741
            if l > k:
                # J = da_(l-1)/dz_k, then dz_l/dz_k = J W_l
                d1 = layers[l - 1][4]
                ja = d1[:, None, :] * (jz if jz is not None else numpy.eye(d1.shape[1]))
                jz = ja @ layers[l][2]
            m = curv[l] if jz is None else jz @ curv[l]
            _put_pair(h, lay_k, layers[l], m, ja, offset)
    _add_l2(h, offset)
    return h


def _structured_blocks(mats, outs, n):
    """Every layer's diagonal block of the Hessian, each formed alone (the
    curvature recursion runs once for all of them): {W key: block}."""
    layers = _layers(mats, outs)
    curv = _curvatures(layers, outs, n)
    blocks = {}
    for lay, a in zip(layers, curv):
        nw = math.prod(PARAM_SHAPES[lay[0]])
        offset = {lay[0]: 0, lay[1]: nw}
        h = numpy.empty((nw + math.prod(PARAM_SHAPES[lay[1]]),) * 2, dtype=DTYPE)
        _put_pair(h, lay, lay, a, None, offset)
        _add_l2(h, offset)
        blocks[lay[0]] = h
    return blocks


def _add_l2(h, offset):
    if _L2:
        for key in _L2_KEYS:
            if key in offset:
                a0 = offset[key]
                idx = numpy.arange(a0, a0 + math.prod(PARAM_SHAPES[key]))
                h[idx, idx] += _L2


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
