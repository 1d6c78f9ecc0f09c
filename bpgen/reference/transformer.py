"""Reference layers of transformer networks, in plain NumPy from the
textbook equations (see :mod:`bpgen.reference`): ``embedding`` (a lookup
and its scatter-add), ``attention`` (multi-head scaled dot-product
self-attention, written per sample and head as batched matrices with an
explicit softmax and its Jacobian; with ``lengths`` each sample runs on
its own real steps alone, so padding is handled independently of the
generated code's key mask) and ``block`` (its layers in order, plus
the input with ``residual``).  Sequences are batch-first (N, T, F)."""
from __future__ import annotations

import numpy as np

from ..layers import RECURRENT_TYPES
from .layers import LAYER_BACKWARD, LAYER_FORWARD, TAKES_LENGTHS

F64 = np.float64


def _embedding_forward(layer, p, x):
    out = p["E"][x]                                           # E[x]: (N, T, F)
    if layer.positions:
        # + P[t] at step t (steps: any: the first T of the table's T_max rows)
        out = out + p["P"][None, :x.shape[1], :]
    return out, x


def _embedding_backward(layer, p, x, dout):
    d_e = np.zeros_like(p["E"])
    np.add.at(d_e, x.ravel(), dout.reshape(-1, dout.shape[-1]))   # rows scattered back
    grads = {"E": d_e}
    if layer.positions:
        grads["P"] = np.zeros_like(p["P"])                    # (rows T .. T_max - 1: 0)
        grads["P"][:x.shape[1]] = dout.sum(axis=0)            # Σ over the samples
    return None, grads                                        # x is token ids: no gradient


def _heads(a, h):
    """(N, T, F) -> (N, h, T, d): head j is columns j*d .. j*d+d-1."""
    n, t, f = a.shape
    return a.reshape(n, t, h, f // h).transpose(0, 2, 1, 3)


def _merge(a):
    """(N, h, T, d) -> (N, T, h*d): the heads side by side."""
    n, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n, t, h * d)


def _attention_forward(layer, p, x, lengths=None):
    """With ``lengths``: each sample on its own real steps alone, as if it
    were a batch of one of length L (padded queries give 0)."""
    if lengths is not None:
        out, caches = np.zeros(x.shape[:2] + (p["Wo"].shape[1],)), []
        for n, length in enumerate(lengths):
            out[n:n + 1, :length], cache = _attention_forward(layer, p, x[n:n + 1, :length])
            caches.append(cache)
        return out, (lengths, caches)
    h = layer.heads
    q = _heads(x @ p["Wq"] + p["bq"], h)                      # Q = X Wq + bq, per head
    k = _heads(x @ p["Wk"] + p["bk"], h)
    v = _heads(x @ p["Wv"] + p["bv"], h)
    d = q.shape[-1]
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)              # S = Q Kᵀ / sqrt(d)
    if layer.causal:
        t = s.shape[-1]
        s = np.where(np.triu(np.ones((t, t), dtype=bool), 1), -np.inf, s)   # keys after t
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    a = e / e.sum(axis=-1, keepdims=True)                     # softmax over the keys
    o = _merge(a @ v)                                         # [A_1 V_1, ..., A_h V_h]
    return o @ p["Wo"] + p["bo"], (x, q, k, v, a, o)


def _attention_backward(layer, p, cache, dout):
    if len(cache) == 2:                                       # per sample (lengths)
        lengths, caches = cache
        d_in, grads = np.zeros(dout.shape[:2] + (p["Wq"].shape[0],)), {}
        for n, (length, one) in enumerate(zip(lengths, caches)):
            d_in[n:n + 1, :length], g = _attention_backward(layer, p, one,
                                                            dout[n:n + 1, :length])
            grads = {k: grads.get(k, 0) + arr for k, arr in g.items()}
        return d_in, grads
    x, q, k, v, a, o = cache
    h, d = layer.heads, q.shape[-1]
    f = x.shape[-1]
    grads = {"Wo": o.reshape(-1, f).T @ dout.reshape(-1, f),
             "bo": dout.reshape(-1, f).sum(axis=0)}
    d_o = _heads(dout @ p["Wo"].T, h)                         # δ(A V) per head
    d_a = d_o @ v.transpose(0, 1, 3, 2)                       # δA = δO Vᵀ
    d_v = a.transpose(0, 1, 3, 2) @ d_o                       # δV = Aᵀ δO
    # the softmax Jacobian diag(a) - a aᵀ, row by row
    d_s = a * (d_a - (d_a * a).sum(axis=-1, keepdims=True)) / np.sqrt(d)
    d_q = d_s @ k                                             # δQ = δS K
    d_k = d_s.transpose(0, 1, 3, 2) @ q                       # δK = δSᵀ Q
    x2 = x.reshape(-1, f)
    d_in = np.zeros_like(x)
    for name, dm in (("q", d_q), ("k", d_k), ("v", d_v)):
        dm = _merge(dm)
        grads["W" + name] = x2.T @ dm.reshape(-1, f)
        grads["b" + name] = dm.reshape(-1, f).sum(axis=0)
        d_in = d_in + dm @ p["W" + name].T
    return d_in, grads


def _own(lay, p):
    return {q.name: p[f"{lay.name}.{q.name}"] for q in lay.params}


def _block_forward(layer, p, x, lengths=None):
    a, caches = x, []
    for lay in layer.layers:
        kw = {"lengths": lengths} if lay.type in TAKES_LENGTHS else {}
        a, cache = LAYER_FORWARD[lay.type](lay, _own(lay, p), a, **kw)
        caches.append(cache)
    if layer.residual:
        a = a + x                                             # the block's input added
    return a, (caches, lengths)


def _block_backward(layer, p, cache, dout):
    (caches, lengths), d, grads = cache, dout, {}
    for lay, cache in zip(reversed(layer.layers), reversed(caches)):
        kw = {"lengths": lengths} if lay.type in RECURRENT_TYPES else {}
        d, g = LAYER_BACKWARD[lay.type](lay, _own(lay, p), cache, d, **kw)
        grads.update({f"{lay.name}.{name}": arr for name, arr in g.items()})
    if layer.residual:
        d = d + dout
    return d, grads


TAKES_LENGTHS.update({"attention", "block"})
LAYER_FORWARD.update({"embedding": _embedding_forward, "attention": _attention_forward,
                      "block": _block_forward})
LAYER_BACKWARD.update({"embedding": _embedding_backward,
                       "attention": _attention_backward, "block": _block_backward})
