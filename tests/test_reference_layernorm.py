"""Unit checks of the reference layernorm layer (bpgen.reference), called
directly with a stub layer object: forward against an independent formula
(and PyTorch when available), backward against central finite differences,
and the adjoint identity between an analytic tangent and the backward pass."""
import types

import numpy as np
import pytest

from bpgen import reference as ref

EPS = 1e-5
F = 5
SHAPES = [(4, F), (3, 4, F)]          # (N, F) and (N, T, F)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def stub(features=F):
    return types.SimpleNamespace(type="layernorm", name="ln", in_shape=(features,))


def sample(shape, seed):
    rng = np.random.default_rng(seed)
    a = 1.5 * rng.standard_normal(shape) + 0.3
    p = {"g": rng.standard_normal(shape[-1]), "b": rng.standard_normal(shape[-1])}
    cot = rng.standard_normal(shape)
    return rng, a, p, cot


def forward(a, p):
    out, _ = ref._layernorm_forward(stub(a.shape[-1]), p, a)
    return out


def expected(a, g, b):
    """Textbook layer norm written independently with np.var (biased)."""
    mu = np.mean(a, axis=-1, keepdims=True)
    var = np.var(a, axis=-1, keepdims=True)
    return (a - mu) / np.sqrt(var + EPS) * g + b


def test_registered():
    assert ref.LAYER_FORWARD["layernorm"] is ref._layernorm_forward
    assert ref.LAYER_BACKWARD["layernorm"] is ref._layernorm_backward
    assert "layernorm" not in ref.RECURRENT_TYPES


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_formula(shape):
    _, a, p, _ = sample(shape, 0)
    a0, g0, b0 = a.copy(), p["g"].copy(), p["b"].copy()
    out = forward(a, p)
    assert out.shape == a.shape and out.dtype == np.float64
    assert rel_err(out, expected(a, p["g"], p["b"])) <= 1e-13
    # inputs untouched
    assert np.array_equal(a, a0) and np.array_equal(p["g"], g0) \
        and np.array_equal(p["b"], b0)
    # with g = 1, b = 0: zero mean and (biased) variance var / (var + eps) per row
    unit = forward(a, {"g": np.ones(shape[-1]), "b": np.zeros(shape[-1])})
    var = np.var(a, axis=-1)
    assert np.allclose(unit.mean(axis=-1), 0.0, atol=1e-13)
    assert np.allclose(unit.var(axis=-1), var / (var + EPS), rtol=1e-12)


def test_forward_constant_rows_and_wrong_width():
    p = {"g": np.full(F, 2.0), "b": np.arange(F, dtype=np.float64)}
    out = forward(np.full((2, F), 7.0), p)            # var = 0: xhat = 0, out = b
    assert np.allclose(out, p["b"], atol=1e-12)
    with pytest.raises(ValueError, match="ln"):
        ref._layernorm_forward(stub(F + 1), p, np.zeros((2, F)))


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_torch(shape):
    torch = pytest.importorskip("torch")
    _, a, p, _ = sample(shape, 1)
    want = torch.nn.functional.layer_norm(
        torch.from_numpy(a), (shape[-1],), weight=torch.from_numpy(p["g"]),
        bias=torch.from_numpy(p["b"]), eps=EPS).numpy()
    assert rel_err(forward(a, p), want) <= 1e-12


def central_diff(f, arr, h=1e-5):
    """d f / d arr by central differences, arr perturbed in place (restored)."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2.0 * h)
    return grad


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_finite_differences(shape):
    _, a, p, cot = sample(shape, 2)
    out, cache = ref._layernorm_forward(stub(), p, a)
    d_in, grads = ref._layernorm_backward(stub(), p, cache, cot)
    assert set(grads) == {"g", "b"}
    assert d_in.shape == a.shape
    assert grads["g"].shape == (F,) and grads["b"].shape == (F,)

    def objective():
        return float(np.sum(forward(a, p) * cot))

    assert rel_err(d_in, central_diff(objective, a)) <= 1e-7
    assert rel_err(grads["g"], central_diff(objective, p["g"])) <= 1e-7
    assert rel_err(grads["b"], central_diff(objective, p["b"])) <= 1e-7
    # closed forms for the parameters, summed over every leading axis
    xhat = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + EPS)
    lead = tuple(range(a.ndim - 1))
    assert rel_err(grads["g"], np.sum(cot * xhat, axis=lead)) <= 1e-13
    assert rel_err(grads["b"], np.sum(cot, axis=lead)) <= 1e-13


def tangent(a, p, da, dg, db):
    """Analytic forward-mode derivative of layer norm in direction (da, dg, db)."""
    mu = a.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(a.var(-1, keepdims=True) + EPS)
    xhat = (a - mu) * inv
    dxhat = inv * (da - da.mean(-1, keepdims=True)
                   - xhat * (da * xhat).mean(-1, keepdims=True))
    return dxhat * p["g"] + xhat * dg + db


@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_identity(shape):
    rng, a, p, cot = sample(shape, 3)
    da = rng.standard_normal(shape)
    dg, db = rng.standard_normal(F), rng.standard_normal(F)
    jvp = tangent(a, p, da, dg, db)

    # the tangent itself is right: a central directional difference
    h = 1e-5
    fd = (forward(a + h * da, {"g": p["g"] + h * dg, "b": p["b"] + h * db})
          - forward(a - h * da, {"g": p["g"] - h * dg, "b": p["b"] - h * db})) / (2 * h)
    assert rel_err(jvp, fd) <= 1e-7

    # <cot, J v> == <J^T cot, v>
    _, cache = ref._layernorm_forward(stub(), p, a)
    d_in, grads = ref._layernorm_backward(stub(), p, cache, cot)
    lhs = float(np.sum(cot * jvp))
    rhs = float(np.sum(d_in * da) + np.sum(grads["g"] * dg) + np.sum(grads["b"] * db))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
