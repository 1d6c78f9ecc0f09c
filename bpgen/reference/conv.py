"""Reference image layers: conv2d, maxpool2d and avgpool2d, forward and
backward written with plain loops over the output positions (see
:mod:`bpgen.reference`).  Semantics are PyTorch's.

Images are (N, C, H, W), the leading axis the batch.  Importing this module
registers the three types in ``LAYER_FORWARD`` / ``LAYER_BACKWARD``.

conv2d (``filters`` F, ``kernel`` k, ``stride`` s (1), ``padding`` p (0),
``activation``, ``alpha``; ``W`` (F, C, k, k), ``b`` (F,)): a cross-correlation
(no kernel flip) of the zero-padded input ``xpad``::

    z[n, f, i, j] = b[f] + sum_{c,u,v} W[f, c, u, v] xpad[n, c, i*s + u, j*s + v]
    out = act(z),   Ho = (H + 2p - k) // s + 1   (likewise Wo)

maxpool2d / avgpool2d (``size`` k, ``stride`` s (= k); no padding): the max /
mean over each k x k window at (i*s, j*s).  Max-pooling's backward routes each
output's error to the first maximum of its window in row-major order;
average-pooling's spreads it evenly.  Overlapping windows accumulate.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .activations import activation, activation_grad
from .layers import LAYER_BACKWARD, LAYER_FORWARD

F64 = np.float64


def _option(layer, name: str, default=None) -> int:
    """An integer option of the layer; ``default`` when absent or None."""
    value = getattr(layer, name, None)
    if value is None:
        if default is None:
            raise ValueError(f"{_name(layer)}: option {name!r} is required")
        value = default
    return int(value)


def _name(layer) -> str:
    return str(getattr(layer, "name", None) or getattr(layer, "type", "layer"))


def _out_size(layer, size: int, k: int, s: int, pad: int) -> int:
    n = (size + 2 * pad - k) // s + 1
    if k < 1 or s < 1 or pad < 0 or n < 1:
        raise ValueError(f"{_name(layer)}: window {k}, stride {s}, padding {pad} "
                         f"do not fit an input of size {size}")
    return n


def _image(layer, a) -> np.ndarray:
    a = np.asarray(a, dtype=F64)
    if a.ndim != 4:
        raise ValueError(f"{_name(layer)}: expected an input (N, C, H, W), got {a.shape}")
    in_shape = getattr(layer, "in_shape", None)
    if in_shape is not None and tuple(a.shape[1:]) != tuple(in_shape):
        raise ValueError(f"{_name(layer)}: expected an input (N, {', '.join(map(str, in_shape))})"
                         f", got {a.shape}")
    return a


# ==========================================================================
# conv2d

def _conv2d_forward(layer, p: Mapping[str, np.ndarray], a: np.ndarray):
    a = _image(layer, a)
    w = np.asarray(p["W"], dtype=F64)
    b = np.asarray(p["b"], dtype=F64)
    n, c, h, wd = a.shape
    f = w.shape[0]
    k = _option(layer, "kernel")
    s = _option(layer, "stride", 1)
    pad = _option(layer, "padding", 0)
    if w.shape != (f, c, k, k) or b.shape != (f,):
        raise ValueError(f"{_name(layer)}: W {w.shape} / b {b.shape} do not fit "
                         f"{c} channels and kernel {k}")
    ho = _out_size(layer, h, k, s, pad)
    wo = _out_size(layer, wd, k, s, pad)

    xpad = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    xpad[:, :, pad:pad + h, pad:pad + wd] = a
    z = np.empty((n, f, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xpad[:, :, i * s:i * s + k, j * s:j * s + k]          # (N, C, k, k)
            # z[n, f, i, j] = b[f] + sum_{c,u,v} W[f, c, u, v] patch[n, c, u, v]
            z[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    out = activation(layer.activation, z, getattr(layer, "alpha", None))
    return out, (xpad, z, (h, wd), (k, s, pad))


def _conv2d_backward(layer, p: Mapping[str, np.ndarray], cache, dout):
    xpad, z, (h, wd), (k, s, pad) = cache
    w = np.asarray(p["W"], dtype=F64)
    delta = np.asarray(dout, dtype=F64) \
        * activation_grad(layer.activation, z, getattr(layer, "alpha", None))   # dL/dz
    ho, wo = z.shape[2:]
    dw = np.zeros_like(w)
    dxpad = np.zeros_like(xpad)
    for i in range(ho):
        for j in range(wo):
            rows = slice(i * s, i * s + k)
            cols = slice(j * s, j * s + k)
            d = delta[:, :, i, j]                                           # (N, F)
            # dW[f, c, u, v] += sum_n d[n, f] xpad[n, c, i*s+u, j*s+v]
            dw += np.tensordot(d, xpad[:, :, rows, cols], axes=([0], [0]))
            # dxpad[n, c, i*s+u, j*s+v] += sum_f d[n, f] W[f, c, u, v]
            dxpad[:, :, rows, cols] += np.tensordot(d, w, axes=([1], [0]))
    grads = {"W": dw, "b": delta.sum(axis=(0, 2, 3))}
    d_in = dxpad[:, :, pad:pad + h, pad:pad + wd].copy()                    # padding removed
    return d_in, grads


# ==========================================================================
# pooling (no parameters)

def _pool_options(layer, a):
    k = _option(layer, "size")
    s = _option(layer, "stride", k)
    h, wd = a.shape[2:]
    return k, s, _out_size(layer, h, k, s, 0), _out_size(layer, wd, k, s, 0)


def _maxpool2d_forward(layer, p, a: np.ndarray):
    a = _image(layer, a)
    n, c = a.shape[:2]
    k, s, ho, wo = _pool_options(layer, a)
    out = np.empty((n, c, ho, wo))
    first = np.empty((n, c, ho, wo), dtype=np.int64)     # flat index u*k + v in the window
    for i in range(ho):
        for j in range(wo):
            window = a[:, :, i * s:i * s + k, j * s:j * s + k].reshape(n, c, k * k)
            idx = np.argmax(window, axis=-1)             # the first maximum (row-major)
            first[:, :, i, j] = idx
            out[:, :, i, j] = np.take_along_axis(window, idx[..., None], axis=-1)[..., 0]
    return out, (a.shape, first, (k, s))


def _maxpool2d_backward(layer, p, cache, dout):
    shape, first, (k, s) = cache
    dout = np.asarray(dout, dtype=F64)
    n, c = shape[:2]
    ho, wo = first.shape[2:]
    d_in = np.zeros(shape)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    for i in range(ho):
        for j in range(wo):
            u, v = np.divmod(first[:, :, i, j], k)
            np.add.at(d_in, (nn, cc, i * s + u, j * s + v), dout[:, :, i, j])
    return d_in, {}


def _avgpool2d_forward(layer, p, a: np.ndarray):
    a = _image(layer, a)
    n, c = a.shape[:2]
    k, s, ho, wo = _pool_options(layer, a)
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = a[:, :, i * s:i * s + k, j * s:j * s + k].mean(axis=(2, 3))
    return out, (a.shape, (k, s))


def _avgpool2d_backward(layer, p, cache, dout):
    shape, (k, s) = cache
    dout = np.asarray(dout, dtype=F64)
    ho, wo = dout.shape[2:]
    d_in = np.zeros(shape)
    for i in range(ho):
        for j in range(wo):
            d_in[:, :, i * s:i * s + k, j * s:j * s + k] += \
                dout[:, :, i, j, None, None] / (k * k)
    return d_in, {}


LAYER_FORWARD.update({
    "conv2d": _conv2d_forward,
    "maxpool2d": _maxpool2d_forward,
    "avgpool2d": _avgpool2d_forward,
})
LAYER_BACKWARD.update({
    "conv2d": _conv2d_backward,
    "maxpool2d": _maxpool2d_backward,
    "avgpool2d": _avgpool2d_backward,
})
