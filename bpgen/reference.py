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
``loss_and_grad(spec, params, x, y)``
    (loss, dict of gradients) by hand-written backpropagation.
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
(recurrent, convolutional) are added by registering two functions.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from .spec import LayerSpec, Spec, load_spec

__all__ = [
    "ACTIVATIONS", "LOSS_FUNCTIONS", "LAYER_FORWARD", "LAYER_BACKWARD",
    "WEIGHT_NAMES",
    "activation", "activation_grad", "activation_grad2",
    "forward", "loss", "loss_and_grad", "loss_from_output", "output_grad",
    "regularization", "init_params", "random_batch",
    "flatten_params", "unflatten_params",
    "finite_difference_grad", "finite_difference_jacobian",
    "finite_difference_hessian",
]

F64 = np.float64

# Parameters that count as weights: regularised by l2, Glorot-initialised.
WEIGHT_NAMES = ("W", "Wx", "Wh")


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


LAYER_FORWARD: dict[str, Callable] = {
    "dense": _dense_forward,
    "flatten": _flatten_forward,
}
LAYER_BACKWARD: dict[str, Callable] = {
    "dense": _dense_backward,
    "flatten": _flatten_backward,
}


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
    return {p: params[f"{layer.name}.{p}"] for p, _ in layer.params}


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
    for key, arr in params.items():
        if key.rsplit(".", 1)[-1] in WEIGHT_NAMES:
            a = np.asarray(arr, dtype=F64)
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


def loss_and_grad(spec, params, x, y):
    """(loss, grads) by textbook backpropagation; grads share params' keys."""
    spec = _spec(spec)
    p = _params64(spec, params)
    out, caches = _forward64(spec, p, _x64(spec, x))
    value = loss_from_output(spec, out, y) + regularization(spec, p)

    grads: dict[str, np.ndarray] = {}
    d = output_grad(spec, out, y)              # output error dL/dA_L
    for layer, cache in zip(reversed(spec.layers), reversed(caches)):
        d, g = LAYER_BACKWARD[layer.type](layer, _layer_params(layer, p), cache, d)
        for name, arr in g.items():
            grads[f"{layer.name}.{name}"] = arr
    result = {}
    for key in spec.param_shapes:              # PARAM_SHAPES order
        g = grads[key]
        if spec.l2 and key.rsplit(".", 1)[-1] in WEIGHT_NAMES:
            g = g + spec.l2 * p[key]
        result[key] = np.ascontiguousarray(g, dtype=F64)
    return value, result


# ==========================================================================
# initialisation and test data

def _fans(key: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:                        # (in, out)
        return shape[0], shape[1]
    if len(shape) == 4:                        # conv kernel (filters, C, k, k)
        rf = shape[2] * shape[3]
        return shape[1] * rf, shape[0] * rf
    raise ValueError(f"{key}: no Glorot fans for shape {shape}")


def init_params(spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Glorot-uniform weights U(-l, l), l = sqrt(6/(fan_in+fan_out)), zero biases.

    One ``numpy.random.default_rng(seed)`` draws the weights in
    ``param_shapes`` order (biases draw nothing).  Arrays have the spec's dtype.
    """
    spec = _spec(spec)
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in spec.param_shapes.items():
        shape = tuple(shape)
        if key.rsplit(".", 1)[-1] in WEIGHT_NAMES:
            fan_in, fan_out = _fans(key, shape)
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            arr = rng.uniform(-limit, limit, size=shape)
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
    """(N_PARAMS, N_PARAMS) Hessian: central differences of the analytic gradient."""
    spec = _spec(spec)
    p = {k: params[k] for k in spec.param_shapes}

    def grad_vec(q):
        _, g = loss_and_grad(spec, q, x, y)
        return np.concatenate([g[k].ravel() for k in spec.param_shapes])

    h = finite_difference_jacobian(grad_vec, p, eps)
    return 0.5 * (h + h.T)
