"""Reference layers: forward and backward of every layer type, written from
the textbook equations (see :mod:`bpgen.reference`)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ..layers import RECURRENT_TYPES
from ..spec import LayerSpec
from .activations import _sigmoid, activation, activation_grad

F64 = np.float64


# ==========================================================================
# layers: forward(layer, p, a) -> (out, cache); backward(layer, p, cache, dout)
# -> (d_in, {param name: grad}).  ``p`` holds the layer's own parameters by
# short name ("W", "b").  Leading axes (N, or N and T) are all batch axes.

def _dense_forward(layer: LayerSpec, p: Mapping[str, np.ndarray], a: np.ndarray):
    z = a @ p["W"] + p["b"]                                   # Z_k = A_{k-1} W + b
    out = activation(layer.activation, z, layer.alpha)       # A_k = f(Z_k)
    return out, (a, z)


def _dense_backward(layer: LayerSpec, p: Mapping[str, np.ndarray], cache, dout):
    a, z = cache
    delta = dout * activation_grad(layer.activation, z, layer.alpha)  # Δ_k
    a2 = a.reshape(-1, a.shape[-1])
    d2 = delta.reshape(-1, delta.shape[-1])
    grads = {"W": a2.T @ d2,                                  # A_{k-1}ᵀ Δ_k
             "b": d2.sum(axis=0)}                             # column sums of Δ_k
    d_in = delta @ p["W"].T                                   # Δ_k W_kᵀ
    return d_in, grads


def _flatten_forward(layer: LayerSpec, p, a: np.ndarray):
    n = a.shape[0]
    return a.reshape(n, -1), a.shape                          # C order


def _flatten_backward(layer: LayerSpec, p, cache, dout):
    return dout.reshape(cache), {}


# Layer normalisation over the last axis (F), as torch.nn.functional.layer_norm
# with normalized_shape=(F,): biased variance, eps inside the square root.
# Parameters "g" (gain, (F,)) and "b" (bias, (F,)).
LAYERNORM_EPS = 1e-5


def _layernorm_forward(layer: LayerSpec, p: Mapping[str, np.ndarray], a: np.ndarray):
    features = layer.in_shape[-1]
    if a.shape[-1] != features:
        raise ValueError(f"{layer.name}: expected last axis {features}, got {a.shape}")
    mu = a.mean(axis=-1, keepdims=True)                       # μ = mean over F
    centred = a - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)    # σ² (biased)
    inv_std = 1.0 / np.sqrt(var + LAYERNORM_EPS)              # 1 / sqrt(σ² + ε)
    xhat = centred * inv_std                                  # x̂ = (a - μ) / sqrt(σ² + ε)
    out = xhat * p["g"] + p["b"]                              # y = x̂ g + b
    return out, (xhat, inv_std)


def _layernorm_backward(layer: LayerSpec, p: Mapping[str, np.ndarray], cache, dout):
    xhat, inv_std = cache
    features = xhat.shape[-1]
    dxhat = dout * p["g"]                                     # dL/dx̂
    d_in = inv_std * (dxhat
                      - dxhat.mean(axis=-1, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    grads = {"g": (dout * xhat).reshape(-1, features).sum(axis=0),  # Σ_batch dout x̂
             "b": dout.reshape(-1, features).sum(axis=0)}           # Σ_batch dout
    return d_in, grads


#: layer types whose forward takes ``lengths=`` (padded sequences; None:
#: every step real); the others work per step and never mix steps
TAKES_LENGTHS: set = set(RECURRENT_TYPES)

LAYER_FORWARD: dict[str, Callable] = {
    "dense": _dense_forward,
    "flatten": _flatten_forward,
    "layernorm": _layernorm_forward,
}
LAYER_BACKWARD: dict[str, Callable] = {
    "dense": _dense_backward,
    "flatten": _flatten_backward,
    "layernorm": _layernorm_backward,
}


# --------------------------------------------------------------------------
# recurrent layers.  x is batch-first (N, T, F).  Each cell is written once,
# in the order it *reads* the sequence (step s = 0, 1, ..., S-1); a birnn's
# backward half is the same cell run on the time-reversed input, its outputs
# reversed back.  Backward is backpropagation through time, the shared
# weights' gradients summed over the steps.
#
# Truncated BPTT (``truncate = k``): the state handed from read step s-1 to
# read step s is treated as a constant whenever s is a positive multiple of k
# (after the cell has read k, 2k, ... steps), i.e. the gradient with respect to
# the incoming state (h, and c for an LSTM) is dropped there -- exactly what
# detaching the state between chunks of k steps does.  The forward pass and
# the gradient through the per-step inputs are unaffected.

def _cut(s: int, truncate: int | None) -> bool:
    """Whether the state entering read step ``s`` is detached."""
    return truncate is not None and s > 0 and s % truncate == 0


def _rnn_cell_forward(p, x, act, alpha):
    """Elman: h_s = act(x_s Wx + h_{s-1} Wh + b), h_{-1} = 0."""
    n, steps, _ = x.shape
    units = p["Wh"].shape[0]
    h = np.zeros((n, units))
    hs, zs, h_prev = [], [], []
    for s in range(steps):
        z = x[:, s] @ p["Wx"] + h @ p["Wh"] + p["b"]
        h_prev.append(h)
        h = activation(act, z, alpha)
        zs.append(z)
        hs.append(h)
    return np.stack(hs, axis=1), (x, zs, h_prev, act, alpha)


def _rnn_cell_backward(p, cache, dhs, truncate):
    x, zs, h_prev, act, alpha = cache
    steps = x.shape[1]
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h_prev[0])          # dL/dh_s through h_{s+1}
    for s in reversed(range(steps)):
        dh = dhs[:, s] + dh_next
        dz = dh * activation_grad(act, zs[s], alpha)
        g["Wx"] += x[:, s].T @ dz
        g["Wh"] += h_prev[s].T @ dz
        g["b"] += dz.sum(axis=0)
        dx[:, s] = dz @ p["Wx"].T
        dh_next = dz @ p["Wh"].T
        if _cut(s, truncate):
            dh_next = np.zeros_like(dh_next)
    return dx, g


def _lstm_cell_forward(p, x, act=None, alpha=None):
    """LSTM, gate blocks [i, f, g, o]:  a = x Wx + h Wh + b,
    i, f, o = sigmoid, g = tanh;  c_s = f c_{s-1} + i g;  h_s = o tanh(c_s)."""
    n, steps, _ = x.shape
    units = p["Wh"].shape[0]
    h = np.zeros((n, units))
    c = np.zeros((n, units))
    hs, steps_cache = [], []
    for s in range(steps):
        a = x[:, s] @ p["Wx"] + h @ p["Wh"] + p["b"]
        i = _sigmoid(a[:, 0 * units:1 * units])
        f = _sigmoid(a[:, 1 * units:2 * units])
        gg = np.tanh(a[:, 2 * units:3 * units])
        o = _sigmoid(a[:, 3 * units:4 * units])
        c_new = f * c + i * gg
        tc = np.tanh(c_new)
        h_new = o * tc
        steps_cache.append((h, c, i, f, gg, o, tc))
        h, c = h_new, c_new
        hs.append(h)
    return np.stack(hs, axis=1), (x, steps_cache)


def _lstm_cell_backward(p, cache, dhs, truncate):
    x, steps_cache = cache
    steps = x.shape[1]
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(steps_cache[0][0])
    dc_next = np.zeros_like(steps_cache[0][1])
    for s in reversed(range(steps)):
        h_prev, c_prev, i, f, gg, o, tc = steps_cache[s]
        dh = dhs[:, s] + dh_next
        do = dh * tc                                   # h = o tanh(c)
        dc = dc_next + dh * o * (1.0 - tc * tc)
        di = dc * gg                                   # c = f c_prev + i g
        df = dc * c_prev
        dg = dc * i
        da = np.concatenate([di * i * (1.0 - i),       # sigmoid'
                             df * f * (1.0 - f),
                             dg * (1.0 - gg * gg),     # tanh'
                             do * o * (1.0 - o)], axis=1)
        g["Wx"] += x[:, s].T @ da
        g["Wh"] += h_prev.T @ da
        g["b"] += da.sum(axis=0)
        dx[:, s] = da @ p["Wx"].T
        dh_next = da @ p["Wh"].T
        dc_next = dc * f
        if _cut(s, truncate):
            dh_next = np.zeros_like(dh_next)
            dc_next = np.zeros_like(dc_next)
    return dx, g


def _gru_cell_forward(p, x, act=None, alpha=None):
    """GRU as in PyTorch, blocks [r, z, n]:
    r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r), z likewise,
    n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n)), h_s = (1 - z) n + z h_{s-1}."""
    n_, steps, _ = x.shape
    units = p["Wh"].shape[0]
    h = np.zeros((n_, units))
    hs, steps_cache = [], []
    for s in range(steps):
        ax = x[:, s] @ p["Wx"] + p["bx"]
        ah = h @ p["Wh"] + p["bh"]
        r = _sigmoid(ax[:, :units] + ah[:, :units])
        z = _sigmoid(ax[:, units:2 * units] + ah[:, units:2 * units])
        ahn = ah[:, 2 * units:]
        n = np.tanh(ax[:, 2 * units:] + r * ahn)
        h_new = (1.0 - z) * n + z * h
        steps_cache.append((h, r, z, n, ahn))
        h = h_new
        hs.append(h)
    return np.stack(hs, axis=1), (x, steps_cache)


def _gru_cell_backward(p, cache, dhs, truncate):
    x, steps_cache = cache
    steps = x.shape[1]
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(steps_cache[0][0])
    for s in reversed(range(steps)):
        h_prev, r, z, n, ahn = steps_cache[s]
        dh = dhs[:, s] + dh_next
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        dan = dn * (1.0 - n * n)                       # pre-activation of n
        dr = dan * ahn
        dar = dr * r * (1.0 - r)
        daz = dz * z * (1.0 - z)
        dax = np.concatenate([dar, daz, dan], axis=1)           # d (x Wx + bx)
        dah = np.concatenate([dar, daz, dan * r], axis=1)       # d (h Wh + bh)
        g["Wx"] += x[:, s].T @ dax
        g["bx"] += dax.sum(axis=0)
        g["Wh"] += h_prev.T @ dah
        g["bh"] += dah.sum(axis=0)
        dx[:, s] = dax @ p["Wx"].T
        dh_next = dh * z + dah @ p["Wh"].T
        if _cut(s, truncate):
            dh_next = np.zeros_like(dh_next)
    return dx, g


#: cell name -> (forward(p, x, act, alpha) -> (hs, cache),
#:               backward(p, cache, dhs, truncate) -> (dx, grads))
CELLS: dict[str, tuple[Callable, Callable]] = {
    "rnn": (_rnn_cell_forward, _rnn_cell_backward),
    "lstm": (_lstm_cell_forward, _lstm_cell_backward),
    "gru": (_gru_cell_forward, _gru_cell_backward),
}


def _cell_of(layer: LayerSpec) -> str:
    return layer.cell if layer.cell else layer.type


def _reversed(a: np.ndarray, lengths) -> np.ndarray:
    """The sequences ``a`` (N, T, ...) time-reversed; with ``lengths`` each
    sample's real steps reversed in place (a[n, L-1], ..., a[n, 0], then its
    padding as it was): its own inverse."""
    if lengths is None:
        return a[:, ::-1]
    out = a.copy()
    for n, length in enumerate(lengths):
        out[n, :length] = a[n, :length][::-1]
    return out


def _recurrent_forward(layer: LayerSpec, p: Mapping[str, np.ndarray], a: np.ndarray,
                       lengths=None):
    """A cell over the sequences ``a``; a forward cell needs nothing for
    padded sequences (``lengths``): padding comes after every real step."""
    cell_fwd, _ = CELLS[_cell_of(layer)]
    act, alpha = layer.activation, layer.alpha
    if layer.type != "birnn":
        return cell_fwd(p, a, act, alpha)
    pf = {k[4:]: v for k, v in p.items() if k.startswith("fwd.")}
    pb = {k[4:]: v for k, v in p.items() if k.startswith("bwd.")}
    hf, cf = cell_fwd(pf, a, act, alpha)
    hb_rev, cb = cell_fwd(pb, _reversed(a, lengths), act, alpha)   # reads x_{T-1}, ..., x_0
    out = np.concatenate([hf, _reversed(hb_rev, lengths)], axis=2)  # bwd output at t: after x_t
    return out, (cf, cb)


def _recurrent_backward(layer: LayerSpec, p: Mapping[str, np.ndarray], cache, dout,
                        truncate: int | None = None, lengths=None):
    _, cell_bwd = CELLS[_cell_of(layer)]
    if layer.type != "birnn":
        return cell_bwd(p, cache, dout, truncate)
    units = layer.units
    pf = {k[4:]: v for k, v in p.items() if k.startswith("fwd.")}
    pb = {k[4:]: v for k, v in p.items() if k.startswith("bwd.")}
    cf, cb = cache
    dxf, gf = cell_bwd(pf, cf, dout[:, :, :units], truncate)
    dxb_rev, gb = cell_bwd(pb, cb, _reversed(dout[:, :, units:], lengths), truncate)
    grads = {f"fwd.{k}": v for k, v in gf.items()}
    grads.update({f"bwd.{k}": v for k, v in gb.items()})
    return dxf + _reversed(dxb_rev, lengths), grads


for _t in RECURRENT_TYPES:
    LAYER_FORWARD[_t] = _recurrent_forward
    LAYER_BACKWARD[_t] = _recurrent_backward
del _t
