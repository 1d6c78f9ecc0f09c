"""An independent plain-NumPy reference implementation (the test oracle).

Written straight from the textbook equations and the public contract
(``CONTRACT.md``); it depends on nothing in bpgen except :mod:`bpgen.spec`, so
that the generated code can be checked against something that shares none of
its machinery.  Speed is not a goal: clarity is.

Everything is computed in float64 (inputs and parameters are cast), and every
returned array is float64, except :func:`init_params` and
:func:`random_batch`, which return the spec's dtype (labels are int64).

Public functions
----------------
``forward(spec, params, x)``
    the network's output before the loss (logits for the cross-entropies).
``loss(spec, params, x, y)``
    the scalar loss, regularisation included (a Python float).
``loss_and_grad(spec, params, x, y, *, truncate="spec")``
    (loss, dict of gradients) by hand-written backpropagation (through time
    for recurrent layers), honouring ``bptt: {truncate: k}`` unless
    ``truncate`` overrides it (``None``: exact).
``exact_loss_and_grad(spec, params, x, y)``
    the same with truncation ignored: the true gradient of the loss.
``loss_from_output(spec, out, y)`` / ``output_grad(spec, out, y)``
    the data term of the loss, and its gradient w.r.t. the output.
``init_params(spec, seed=0)`` / ``random_batch(spec, n, seed=0)``
    Glorot-uniform parameters; random test data that fits the loss.
``flatten_params(spec, params)`` / ``unflatten_params(spec, vector)``
    dict <-> flat vector in the contract's flat order.
``finite_difference_grad(f, params, eps)`` /
``finite_difference_jacobian(f, params, eps)`` /
``finite_difference_hessian(spec, params, x, y, eps)``
    central finite differences for checking derivatives.
``ACTIVATIONS[name] = (value, first, second)``
    each ``fn(z, alpha)``; explicit hand-written NumPy formulas.

Layer types are dispatched through ``LAYER_FORWARD`` / ``LAYER_BACKWARD``
(type -> function) and losses through ``LOSS_FUNCTIONS``, so new layer types
are added by registering two functions.  Recurrent layers (``rnn``, ``lstm``,
``gru``, ``birnn``; x batch-first (N, T, F)) share one pair, built on the
per-cell step functions in ``CELLS``; their backward function also takes
``truncate=k``.

Sequence losses: with ``steps: all`` the output (N, T, K) is compared with y
of shape (N, T, K) (labels (N, T)) and the mean runs over samples and steps;
with ``steps: last`` only out[:, -1] is read and y is (N, K) (labels (N,)).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from .layers import RECURRENT_TYPES, ROLES, fans
from .spec import LayerSpec, Spec, load_spec

__all__ = [
    "ACTIVATIONS", "LOSS_FUNCTIONS", "LAYER_FORWARD", "LAYER_BACKWARD",
    "activation", "activation_grad", "activation_grad2",
    "RECURRENT_TYPES", "CELLS",
    "forward", "loss", "loss_and_grad", "exact_loss_and_grad",
    "loss_from_output", "output_grad",
    "regularization", "init_params", "random_batch",
    "flatten_params", "unflatten_params",
    "finite_difference_grad", "finite_difference_jacobian",
    "finite_difference_hessian",
]

F64 = np.float64

# Non-math facts (which parameters are weights, Glorot fans, which layer
# types are recurrent) come from the layer types' declarations, the one place
# they are stated; the math below is this module's own.


# ==========================================================================
# scalar helpers

try:  # scipy is optional
    from scipy.special import erf as _erf  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[F64])

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: only exp(-|z|) is evaluated."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z):
    """log(1 + exp(z)), stable for any z."""
    return np.logaddexp(0.0, z)


def _phi(z):
    """The standard normal density, with the argument clipped (it is 0 there)."""
    zc = np.clip(z, -40.0, 40.0)
    return _INV_SQRT_2PI * np.exp(-0.5 * zc * zc), zc


# ==========================================================================
# activations: value, first derivative, second derivative
# At a kink (z == 0) the derivative is the right-hand one, the second is 0.

def _identity(z, a=None):
    return z.copy()


def _identity_d(z, a=None):
    return np.ones_like(z)


def _identity_d2(z, a=None):
    return np.zeros_like(z)


def _sigmoid_f(z, a=None):
    return _sigmoid(z)


def _sigmoid_d(z, a=None):
    s = _sigmoid(z)
    return s * (1.0 - s)


def _sigmoid_d2(z, a=None):
    s = _sigmoid(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _tanh(z, a=None):
    return np.tanh(z)


def _tanh_d(z, a=None):
    t = np.tanh(z)
    return 1.0 - t * t


def _tanh_d2(z, a=None):
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _relu(z, a=None):
    return np.where(z >= 0, z, 0.0)


def _relu_d(z, a=None):
    return np.where(z >= 0, 1.0, 0.0)


def _relu_d2(z, a=None):
    return np.zeros_like(z)


def _leaky(z, a=0.01):
    a = 0.01 if a is None else a
    return np.where(z >= 0, z, a * z)


def _leaky_d(z, a=0.01):
    a = 0.01 if a is None else a
    return np.where(z >= 0, 1.0, a)


def _leaky_d2(z, a=0.01):
    return np.zeros_like(z)


def _elu(z, a=1.0):
    a = 1.0 if a is None else a
    zn = np.minimum(z, 0.0)                      # exp never sees a large argument
    return np.where(z >= 0, z, a * np.expm1(zn))


def _elu_d(z, a=1.0):
    a = 1.0 if a is None else a
    zn = np.minimum(z, 0.0)
    return np.where(z >= 0, 1.0, a * np.exp(zn))


def _elu_d2(z, a=1.0):
    a = 1.0 if a is None else a
    zn = np.minimum(z, 0.0)
    return np.where(z >= 0, 0.0, a * np.exp(zn))


def _softplus_f(z, a=None):
    return _softplus(z)


def _softplus_d(z, a=None):
    return _sigmoid(z)


def _softplus_d2(z, a=None):
    s = _sigmoid(z)
    return s * (1.0 - s)


def _silu(z, a=None):
    return z * _sigmoid(z)


def _silu_d(z, a=None):
    s = _sigmoid(z)
    return s + z * s * (1.0 - s)


def _silu_d2(z, a=None):
    # d/dz [s + z s'] = 2 s' + z s'' = s (1 - s) (2 + z (1 - 2 s))
    s = _sigmoid(z)
    return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


def _gelu(z, a=None):
    return 0.5 * z * (1.0 + _erf(z / _SQRT2))


def _gelu_d(z, a=None):
    # Phi(z) + z phi(z)
    p, zc = _phi(z)
    return 0.5 * (1.0 + _erf(z / _SQRT2)) + zc * p


def _gelu_d2(z, a=None):
    # 2 phi(z) + z phi'(z) = phi(z) (2 - z^2)
    p, zc = _phi(z)
    return p * (2.0 - zc * zc)


#: name -> (value, first derivative, second derivative), each fn(z, alpha)
ACTIVATIONS: dict[str, tuple[Callable, Callable, Callable]] = {
    "identity": (_identity, _identity_d, _identity_d2),
    "sigmoid": (_sigmoid_f, _sigmoid_d, _sigmoid_d2),
    "tanh": (_tanh, _tanh_d, _tanh_d2),
    "relu": (_relu, _relu_d, _relu_d2),
    "leaky_relu": (_leaky, _leaky_d, _leaky_d2),
    "elu": (_elu, _elu_d, _elu_d2),
    "softplus": (_softplus_f, _softplus_d, _softplus_d2),
    "silu": (_silu, _silu_d, _silu_d2),
    "gelu": (_gelu, _gelu_d, _gelu_d2),
}


def _act(name: str, order: int, z, alpha=None):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}")
    z = np.asarray(z, dtype=F64)
    return np.asarray(ACTIVATIONS[name][order](z, alpha), dtype=F64)


def activation(name: str, z, alpha=None) -> np.ndarray:
    """The activation ``name`` applied elementwise (float64)."""
    return _act(name, 0, z, alpha)


def activation_grad(name: str, z, alpha=None) -> np.ndarray:
    """Its first derivative, elementwise (right-hand at a kink)."""
    return _act(name, 1, z, alpha)


def activation_grad2(name: str, z, alpha=None) -> np.ndarray:
    """Its second derivative, elementwise (0 at a kink)."""
    return _act(name, 2, z, alpha)


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


def _recurrent_forward(layer: LayerSpec, p: Mapping[str, np.ndarray], a: np.ndarray):
    cell_fwd, _ = CELLS[_cell_of(layer)]
    act, alpha = layer.activation, layer.alpha
    if layer.type != "birnn":
        return cell_fwd(p, a, act, alpha)
    pf = {k[4:]: v for k, v in p.items() if k.startswith("fwd.")}
    pb = {k[4:]: v for k, v in p.items() if k.startswith("bwd.")}
    hf, cf = cell_fwd(pf, a, act, alpha)
    hb_rev, cb = cell_fwd(pb, a[:, ::-1], act, alpha)      # reads x_{T-1}, ..., x_0
    out = np.concatenate([hf, hb_rev[:, ::-1]], axis=2)    # bwd output at t: after x_t
    return out, (cf, cb)


def _recurrent_backward(layer: LayerSpec, p: Mapping[str, np.ndarray], cache, dout,
                        truncate: int | None = None):
    _, cell_bwd = CELLS[_cell_of(layer)]
    if layer.type != "birnn":
        return cell_bwd(p, cache, dout, truncate)
    units = layer.units
    pf = {k[4:]: v for k, v in p.items() if k.startswith("fwd.")}
    pb = {k[4:]: v for k, v in p.items() if k.startswith("bwd.")}
    cf, cb = cache
    dxf, gf = cell_bwd(pf, cf, dout[:, :, :units], truncate)
    dxb_rev, gb = cell_bwd(pb, cb, dout[:, ::-1, units:], truncate)
    grads = {f"fwd.{k}": v for k, v in gf.items()}
    grads.update({f"bwd.{k}": v for k, v in gb.items()})
    return dxf + dxb_rev[:, ::-1], grads


for _t in RECURRENT_TYPES:
    LAYER_FORWARD[_t] = _recurrent_forward
    LAYER_BACKWARD[_t] = _recurrent_backward
del _t


# ==========================================================================
# losses: value(out, y) (mean over the batch axes) and d value / d out

def _batch_count(out: np.ndarray) -> int:
    """Number of (sample, step) terms the mean runs over: all axes but the last."""
    return int(np.prod(out.shape[:-1]))


def _mse(out, y):
    d = out - y
    return 0.5 * float(np.sum(d * d)) / _batch_count(out)


def _mse_grad(out, y):
    return (out - y) / _batch_count(out)


def _log_softmax(out):
    m = np.max(out, axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(out - m), axis=-1, keepdims=True))
    return out - lse


def _softmax(out):
    m = np.max(out, axis=-1, keepdims=True)
    e = np.exp(out - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def _one_hot(y, k):
    return (y[..., None] == np.arange(k)).astype(F64)


def _sce(out, y):
    logp = _log_softmax(out)
    picked = np.take_along_axis(logp, y[..., None], axis=-1)
    return -float(np.sum(picked)) / _batch_count(out)


def _sce_grad(out, y):
    return (_softmax(out) - _one_hot(y, out.shape[-1])) / _batch_count(out)


def _bce(out, y):
    # -(y log s + (1-y) log(1-s)) = softplus(o) - y o
    return float(np.sum(_softplus(out) - y * out)) / _batch_count(out)


def _bce_grad(out, y):
    return (_sigmoid(out) - y) / _batch_count(out)


#: loss name -> (value(out, y), gradient w.r.t. out)
LOSS_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "mse": (_mse, _mse_grad),
    "softmax_cross_entropy": (_sce, _sce_grad),
    "sigmoid_binary_cross_entropy": (_bce, _bce_grad),
}


# ==========================================================================
# argument handling

def _spec(spec) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def _params64(spec: Spec, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    shapes = spec.param_shapes
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a dict, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(f"params: missing keys {missing}, unexpected keys {extra}")
    out = {}
    for k, shape in shapes.items():
        arr = np.array(params[k], dtype=F64)          # a copy: never modify inputs
        if arr.shape != tuple(shape):
            raise ValueError(f"params[{k!r}]: expected shape {tuple(shape)}, "
                             f"got {arr.shape}")
        out[k] = arr
    return out


def _x64(spec: Spec, x) -> np.ndarray:
    x = np.array(x, dtype=F64)
    if x.ndim != 1 + len(spec.input.shape) or x.shape[1:] != tuple(spec.input.shape):
        raise ValueError(f"x: expected shape (N, {', '.join(map(str, spec.input.shape))})"
                         f", got {x.shape}")
    return x


def _layer_params(layer: LayerSpec, params: Mapping[str, np.ndarray]):
    return {p.name: params[f"{layer.name}.{p.name}"] for p in layer.params}


def _select_output(spec: Spec, out: np.ndarray) -> np.ndarray:
    """The part of the output the loss reads (the last step for ``steps: last``)."""
    if spec.input.kind == "sequence" and spec.loss.steps == "last" and out.ndim == 3:
        return out[:, -1, :]
    return out


def _y_for(spec: Spec, out: np.ndarray, y) -> np.ndarray:
    if spec.loss.type == "softmax_cross_entropy":
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise ValueError(f"y: expected integer class labels, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.shape != out.shape[:-1]:
            raise ValueError(f"y: expected shape {out.shape[:-1]}, got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= out.shape[-1]):
            raise ValueError(f"y: labels must lie in [0, {out.shape[-1]})")
        return y
    y = np.array(y, dtype=F64)
    if y.shape != out.shape:
        raise ValueError(f"y: expected shape {out.shape}, got {y.shape}")
    return y


# ==========================================================================
# the network

def _forward64(spec: Spec, params: dict, x: np.ndarray):
    a = x
    caches = []
    for layer in spec.layers:
        fwd = LAYER_FORWARD.get(layer.type)
        if fwd is None:
            raise ValueError(f"reference: layer type {layer.type!r} is not implemented")
        a, cache = fwd(layer, _layer_params(layer, params), a)
        caches.append(cache)
    return a, caches


def forward(spec, params, x) -> np.ndarray:
    """The network's output before the loss (float64)."""
    spec = _spec(spec)
    out, _ = _forward64(spec, _params64(spec, params), _x64(spec, x))
    return np.ascontiguousarray(out, dtype=F64)


def regularization(spec, params) -> float:
    """0.5 * l2 * (sum of squares of every weight), biases excluded."""
    spec = _spec(spec)
    if spec.l2 == 0.0:
        return 0.0
    total = 0.0
    for key in spec.l2_keys:
        a = np.asarray(params[key], dtype=F64)
        total += float(np.sum(a * a))
    return 0.5 * spec.l2 * total


def loss_from_output(spec, out, y) -> float:
    """The data term of the loss given the network output ``out``."""
    spec = _spec(spec)
    out = _select_output(spec, np.asarray(out, dtype=F64))
    value, _ = LOSS_FUNCTIONS[spec.loss.type]
    return float(value(out, _y_for(spec, out, y)))


def output_grad(spec, out, y) -> np.ndarray:
    """d (data term) / d out, the output error, same shape as ``out``."""
    spec = _spec(spec)
    out = np.asarray(out, dtype=F64)
    sel = _select_output(spec, out)
    _, grad = LOSS_FUNCTIONS[spec.loss.type]
    g = grad(sel, _y_for(spec, sel, y))
    if sel.shape != out.shape:                 # steps: last -> zero elsewhere
        full = np.zeros_like(out)
        full[:, -1, :] = g
        g = full
    return g


def loss(spec, params, x, y) -> float:
    """The scalar loss: mean data term plus l2 regularisation."""
    spec = _spec(spec)
    p = _params64(spec, params)
    out, _ = _forward64(spec, p, _x64(spec, x))
    return loss_from_output(spec, out, y) + regularization(spec, p)


def _truncate_arg(spec: Spec, truncate) -> int | None:
    if isinstance(truncate, str) and truncate == "spec":
        return spec.truncate
    if truncate is None:
        return None
    if isinstance(truncate, bool) or not isinstance(truncate, (int, np.integer)) \
            or truncate < 1:
        raise ValueError(f"truncate: expected a positive integer, None or 'spec', "
                         f"got {truncate!r}")
    return int(truncate)


def loss_and_grad(spec, params, x, y, *, truncate="spec"):
    """(loss, grads) by textbook backpropagation; grads share params' keys.

    Recurrent layers use backpropagation through time.  ``truncate`` is the
    BPTT truncation length k: ``"spec"`` (the default) takes ``spec.truncate``
    (``bptt: {truncate: k}``), ``None`` gives the exact gradient, an integer
    overrides the spec.  With k, the gradient through each recurrent cell's
    state (h, and c) is dropped after every k steps the cell reads (a birnn's
    backward half counts from the last step), as if the state were detached
    between chunks of k steps.  The loss value never depends on ``truncate``.
    """
    spec = _spec(spec)
    k = _truncate_arg(spec, truncate)
    p = _params64(spec, params)
    out, caches = _forward64(spec, p, _x64(spec, x))
    value = loss_from_output(spec, out, y) + regularization(spec, p)

    grads: dict[str, np.ndarray] = {}
    d = output_grad(spec, out, y)              # output error dL/dA_L
    for layer, cache in zip(reversed(spec.layers), reversed(caches)):
        backward = LAYER_BACKWARD[layer.type]
        lp = _layer_params(layer, p)
        if layer.type in RECURRENT_TYPES:
            d, g = backward(layer, lp, cache, d, truncate=k)
        else:
            d, g = backward(layer, lp, cache, d)
        for name, arr in g.items():
            grads[f"{layer.name}.{name}"] = arr
    result = {}
    for key in spec.param_shapes:              # PARAM_SHAPES order
        g = grads[key]
        if spec.l2 and key in spec.l2_keys:
            g = g + spec.l2 * p[key]
        result[key] = np.ascontiguousarray(g, dtype=F64)
    return value, result


def exact_loss_and_grad(spec, params, x, y):
    """(loss, exact gradient): :func:`loss_and_grad` ignoring ``bptt.truncate``
    (the gradient of the loss itself, whose Hessian ``hvp``/``hessian`` give)."""
    return loss_and_grad(spec, params, x, y, truncate=None)


# ==========================================================================
# initialisation and test data

def init_params(spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Glorot-uniform weights U(-l, l), l = sqrt(6/(fan_in+fan_out)), zero
    biases, unit gains (by the parameters' roles).

    One ``numpy.random.default_rng(seed)`` draws the weights in
    ``param_shapes`` order (biases and gains draw nothing).  Arrays have the
    spec's dtype.
    """
    spec = _spec(spec)
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in spec.param_shapes.items():
        shape = tuple(shape)
        init = ROLES[spec.param_roles[key]].init
        if init == "glorot":
            fan_in, fan_out = fans(shape)
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            arr = rng.uniform(-limit, limit, size=shape)
        elif init == "ones":
            arr = np.ones(shape)
        else:
            arr = np.zeros(shape)
        out[key] = np.ascontiguousarray(arr, dtype=spec.dtype)
    return out


def random_batch(spec, n: int, seed: int = 0):
    """(x, y): standard-normal inputs and targets that fit the loss.

    Labels are int64 in range for softmax_cross_entropy, values in [0, 1] for
    sigmoid_binary_cross_entropy, standard-normal targets for mse.
    """
    spec = _spec(spec)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(spec.input.shape)).astype(spec.dtype)
    out_shape = (n,) + tuple(spec.output_shape)
    if spec.input.kind == "sequence" and spec.loss.steps == "last" and len(out_shape) == 3:
        out_shape = (n, out_shape[-1])
    kind = spec.loss.type
    if kind == "softmax_cross_entropy":
        y = rng.integers(0, out_shape[-1], size=out_shape[:-1], dtype=np.int64)
    elif kind == "sigmoid_binary_cross_entropy":
        y = rng.uniform(0.0, 1.0, size=out_shape).astype(spec.dtype)
    else:
        y = rng.standard_normal(out_shape).astype(spec.dtype)
    return x, y


# ==========================================================================
# flat order and finite differences

def flatten_params(spec, params) -> np.ndarray:
    """Concatenate in ``param_shapes`` order, each array in C order."""
    spec = _spec(spec)
    p = _params64(spec, params)
    return np.concatenate([p[k].ravel() for k in spec.param_shapes]) \
        if p else np.zeros(0)


def unflatten_params(spec, vector) -> dict[str, np.ndarray]:
    spec = _spec(spec)
    v = np.asarray(vector, dtype=F64).ravel()
    out, i = {}, 0
    for k, shape in spec.param_shapes.items():
        size = math.prod(shape)
        out[k] = v[i:i + size].reshape(shape).copy()
        i += size
    if i != v.size:
        raise ValueError(f"vector: expected {i} entries, got {v.size}")
    return out


def _copy64(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=F64) for k, v in params.items()}


def finite_difference_grad(f: Callable, params: Mapping[str, Any],
                           eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences (f(θ+εe) - f(θ-εe)) / 2ε of a scalar f(params)."""
    p = _copy64(params)
    grads = {}
    for key, arr in p.items():
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)   # views into p[key] / g
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = float(f(p))
            flat[i] = old - eps
            fm = float(f(p))
            flat[i] = old
            gflat[i] = (fp - fm) / (2.0 * eps)
        grads[key] = g
    return grads


def finite_difference_jacobian(f: Callable, params: Mapping[str, Any],
                               eps: float = 1e-6) -> np.ndarray:
    """(out_size, n_params) central-difference Jacobian of a vector f(params).

    Columns follow the flat order: keys in dict order, each array in C order.
    """
    p = _copy64(params)
    cols = []
    for key, arr in p.items():
        flat = arr.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = np.asarray(f(p), dtype=F64).ravel()
            flat[i] = old - eps
            fm = np.asarray(f(p), dtype=F64).ravel()
            flat[i] = old
            cols.append((fp - fm) / (2.0 * eps))
    if not cols:
        return np.zeros((np.asarray(f(p)).size, 0))
    return np.stack(cols, axis=1)


def finite_difference_hessian(spec, params, x, y, eps: float = 1e-5) -> np.ndarray:
    """(N_PARAMS, N_PARAMS) Hessian of the loss: central differences of the
    exact analytic gradient (``bptt.truncate`` is ignored, as for ``hessian``)."""
    spec = _spec(spec)
    p = {k: params[k] for k in spec.param_shapes}

    def grad_vec(q):
        _, g = exact_loss_and_grad(spec, q, x, y)
        return np.concatenate([g[k].ravel() for k in spec.param_shapes])

    h = finite_difference_jacobian(grad_vec, p, eps)
    return 0.5 * (h + h.T)
