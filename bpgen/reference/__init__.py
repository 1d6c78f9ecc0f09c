"""An independent plain-NumPy reference implementation (the test oracle).

Written straight from the textbook equations and the documented file format
(``docs/architecture-file.md``); it takes from bpgen only the validated spec,
the layer types' non-math facts (which parameters are weights, Glorot
fans, which types are recurrent) and each loss's own plain-NumPy reference
(kept in the loss's file, apart from its derivation), so that the generated
code is checked against something that shares none of its machinery.  Speed is not a goal:
clarity is.

Everything is computed in float64 (inputs and parameters are cast; an input
kind of integers keeps x as int64), and every returned array is float64,
except :func:`init_params` and :func:`random_batch`, which return the spec's
dtype (labels are int64; x is the input kind's ``sample``).

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

The code is split by kind: ``activations.py`` (scalar functions),
``layers.py`` (every layer type, recurrent cells included) and this file
(the losses' dispatch, the network, initialisation, finite differences).

Layer types are dispatched through ``LAYER_FORWARD`` / ``LAYER_BACKWARD``
(type -> function), so new layer types are added by registering two
functions.  Recurrent layers (``rnn``, ``lstm``, ``gru``, ``birnn``; x
batch-first (N, T, F)) share one pair, built on the per-cell step functions
in ``CELLS``; their backward function also takes ``truncate=k``.  A loss's
reference is in its own file, ``bpgen/losses/<name>.py`` (``reference_value``,
``reference_grad``, ``sample_targets``: plain NumPy, apart from its
derivation), looked up in ``bpgen.losses.LOSSES``.

Sequence losses: with ``steps: all`` the output (N, T, K) is compared with y
of shape (N, T, K) (labels (N, T)) and the mean runs over samples and steps;
with ``steps: last`` only out[:, -1] is read and y is (N, K) (labels (N,)).

Padded sequences: ``forward``, ``loss``, ``loss_and_grad`` and
``exact_loss_and_grad`` take ``lengths`` ((N,) integers in [1, T]).  The
reference handles them the way hand-written code does, sharing nothing
with the generated code's masks: the loss reads only the real (sample,
step) pairs (their mean with ``steps: all``, out[n, lengths[n] - 1] with
``steps: last``), and a birnn's backward half runs over each sample's real
steps reversed (x[n, L-1], ..., x[n, 0], then the padding), so that it
starts at the sample's last real step and its truncation counts from
there; attention runs each sample on its own real steps alone (x[n, :L]:
no padded key exists to attend to); forward's outputs at padded steps are 0.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from ..layers import RECURRENT_TYPES, ROLES, fans
from ..losses import LOSSES
from ..shapes import symbolic
from ..spec import LayerSpec, Spec, load_spec
from .activations import (ACTIVATIONS, _sigmoid, _softplus, activation,  # noqa: F401
                          activation_grad, activation_grad2)
from .layers import (CELLS, LAYER_BACKWARD, LAYER_FORWARD, TAKES_LENGTHS,  # noqa: F401
                     _layernorm_backward, _layernorm_forward)
from . import conv  # noqa: F401  (registers conv2d, maxpool2d, avgpool2d)
from . import transformer  # noqa: F401  (registers embedding, attention, block)

__all__ = [
    "ACTIVATIONS", "LAYER_FORWARD", "LAYER_BACKWARD",
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
    """x as float64 (a copy); integer x (an input kind with ``x_dtype``) as int64."""
    if spec.input.x_dtype is None:
        x = np.array(x, dtype=F64)
    else:
        if np.asarray(x).dtype.kind not in "iu":
            raise ValueError(f"x: expected integers, got dtype {np.asarray(x).dtype}")
        x = np.array(x, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= spec.input.bound):
            raise ValueError(f"x: values must lie in [0, {spec.input.bound})")
    if x.ndim != 1 + len(spec.input.shape) or any(
            d != s and not symbolic(d) for d, s in zip(spec.input.shape, x.shape[1:])):
        raise ValueError(f"x: expected shape (N, {', '.join(map(str, spec.input.shape))})"
                         f", got {x.shape}")
    return x


def _layer_params(layer: LayerSpec, params: Mapping[str, np.ndarray]):
    return {p.name: params[f"{layer.name}.{p.name}"] for p in layer.params}


def _lengths64(spec: Spec, lengths, x):
    """``lengths`` as int64 (N,) with values in [1, T] (T: x's second axis), or None."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    n = x.shape[0]
    t = x.shape[1] if spec.input.is_sequence else None
    if not spec.input.is_sequence or arr.dtype.kind not in "iu" or arr.shape != (n,) \
            or arr.min() < 1 or arr.max() > t:
        raise ValueError(f"lengths: expected ({n},) integers in [1, {t}]")
    return arr.astype(np.int64)


def _real(out: np.ndarray, lengths) -> np.ndarray:
    """(N, T) booleans: True at the real steps."""
    return np.arange(out.shape[1])[None, :] < lengths[:, None]


def _select_output(spec: Spec, out: np.ndarray, lengths=None) -> np.ndarray:
    """The part of the output the loss reads (the last step for ``steps: last``,
    each sample's last real one with ``lengths``; with ``lengths`` and
    ``steps: all`` the real (sample, step) pairs as rows)."""
    if spec.input.is_sequence and out.ndim == 3 and lengths is not None:
        if spec.loss.steps == "last":
            return out[np.arange(out.shape[0]), lengths - 1, :]
        return out[_real(out, lengths)]
    if spec.input.is_sequence and spec.loss.steps == "last" and out.ndim == 3:
        return out[:, -1, :]
    return out


def _y_for(spec: Spec, out: np.ndarray, y) -> np.ndarray:
    if LOSSES[spec.loss.type].target_kind == "labels":
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

def _forward64(spec: Spec, params: dict, x: np.ndarray, lengths=None):
    a = x
    caches = []
    for layer in spec.layers:
        fwd = LAYER_FORWARD.get(layer.type)
        if fwd is None:
            raise ValueError(f"reference: layer type {layer.type!r} is not implemented")
        if layer.type in TAKES_LENGTHS:
            a, cache = fwd(layer, _layer_params(layer, params), a, lengths=lengths)
        else:
            a, cache = fwd(layer, _layer_params(layer, params), a)
        caches.append(cache)
    return a, caches


def forward(spec, params, x, lengths=None) -> np.ndarray:
    """The network's output before the loss (float64); with ``lengths``, 0
    at the padded steps."""
    spec = _spec(spec)
    x = _x64(spec, x)
    lengths = _lengths64(spec, lengths, x)
    out, _ = _forward64(spec, _params64(spec, params), x, lengths)
    if lengths is not None and out.ndim == 3:
        out = np.where(_real(out, lengths)[:, :, None], out, 0.0)
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


def _y_real(spec: Spec, out: np.ndarray, y, lengths):
    """y at the pairs the loss reads (the real ones with ``lengths`` and
    ``steps: all``: rows in the order of ``_select_output``'s)."""
    if lengths is None or out.ndim != 3 or spec.loss.steps == "last":
        return y
    y = np.asarray(y)
    if y.shape[:2] != out.shape[:2]:
        raise ValueError(f"y: expected shape {out.shape[:2]} + ..., got {y.shape}")
    return y[_real(out, lengths)]


def loss_from_output(spec, out, y, lengths=None) -> float:
    """The data term of the loss given the network output ``out``."""
    spec = _spec(spec)
    out = np.asarray(out, dtype=F64)
    sel = _select_output(spec, out, lengths)
    y = _y_real(spec, out, y, lengths)
    return float(LOSSES[spec.loss.type].reference_value(sel, _y_for(spec, sel, y)))


def output_grad(spec, out, y, lengths=None) -> np.ndarray:
    """d (data term) / d out, the output error, same shape as ``out``."""
    spec = _spec(spec)
    out = np.asarray(out, dtype=F64)
    sel = _select_output(spec, out, lengths)
    g = LOSSES[spec.loss.type].reference_grad(sel, _y_for(spec, sel,
                                                          _y_real(spec, out, y, lengths)))
    if lengths is not None and out.ndim == 3:  # back to (N, T, K), 0 elsewhere
        full = np.zeros_like(out)
        if spec.loss.steps == "last":
            full[np.arange(out.shape[0]), lengths - 1, :] = g
        else:
            full[_real(out, lengths)] = g
        return full
    if sel.shape != out.shape:                 # steps: last -> zero elsewhere
        full = np.zeros_like(out)
        full[:, -1, :] = g
        g = full
    return g


def loss(spec, params, x, y, lengths=None) -> float:
    """The scalar loss: mean data term plus l2 regularisation."""
    spec = _spec(spec)
    p = _params64(spec, params)
    x = _x64(spec, x)
    lengths = _lengths64(spec, lengths, x)
    out, _ = _forward64(spec, p, x, lengths)
    return loss_from_output(spec, out, y, lengths) + regularization(spec, p)


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


def loss_and_grad(spec, params, x, y, *, truncate="spec", lengths=None):
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
    x = _x64(spec, x)
    lengths = _lengths64(spec, lengths, x)
    out, caches = _forward64(spec, p, x, lengths)
    value = loss_from_output(spec, out, y, lengths) + regularization(spec, p)

    grads: dict[str, np.ndarray] = {}
    d = output_grad(spec, out, y, lengths)     # output error dL/dA_L
    for layer, cache in zip(reversed(spec.layers), reversed(caches)):
        backward = LAYER_BACKWARD[layer.type]
        lp = _layer_params(layer, p)
        if layer.type in RECURRENT_TYPES:
            d, g = backward(layer, lp, cache, d, truncate=k, lengths=lengths)
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


def exact_loss_and_grad(spec, params, x, y, lengths=None):
    """(loss, exact gradient): :func:`loss_and_grad` ignoring ``bptt.truncate``
    (the gradient of the loss itself, whose Hessian ``hvp``/``hessian`` give)."""
    return loss_and_grad(spec, params, x, y, truncate=None, lengths=lengths)


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
    """(x, y): inputs (the input kind's sample data: standard-normal for real
    inputs) and targets that fit the loss.

    The targets are the loss's ``sample_targets``: int64 labels in range for
    a loss of labels, uniform values in [0, 1] for one with that range,
    standard-normal targets otherwise.
    """
    spec = _spec(spec)
    rng = np.random.default_rng(seed)
    # the input kind's sample data (steps: any: T = 5, or the smallest max_steps)
    bounds = [dict(lay.options).get("max_steps") for lay in spec.layers]
    steps = min([5] + [b for b in bounds if b is not None])
    x = (spec.input.sample(rng, n, spec.dtype, steps) if symbolic(spec.input.steps)
         else spec.input.sample(rng, n, spec.dtype))
    out_shape = (n,) + tuple(spec.output_shape)
    if len(out_shape) == 3:          # a sequence output: x's T (steps: any: the sample's)
        out_shape = (n, x.shape[1], out_shape[-1])
    if spec.input.is_sequence and spec.loss.steps == "last" and len(out_shape) == 3:
        out_shape = (n, out_shape[-1])
    y = LOSSES[spec.loss.type].sample_targets(rng, out_shape, spec.dtype)
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
