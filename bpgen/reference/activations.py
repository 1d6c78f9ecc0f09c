"""Reference activations: value, first and second derivative, each an
explicit hand-written NumPy formula (see :mod:`bpgen.reference`)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

F64 = np.float64


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
