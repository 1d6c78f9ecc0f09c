"""Checks of the independent NumPy reference (bpgen.reference) against
central finite differences and hand-computed values."""
import itertools
import math

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.spec import load_spec

ACTS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
        "softplus", "silu", "gelu"]
LOSSES = ["mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy"]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def mlp(act, loss, l2=0.0, out=3, **extra):
    d = {"name": "t", "input": {"features": 5},
         "layers": [{"type": "dense", "units": 4, "activation": act, **extra},
                    {"type": "dense", "units": 3, "activation": act, **extra},
                    {"type": "dense", "units": out}],
         "loss": loss}
    if l2:
        d["regularization"] = {"l2": l2}
    return load_spec(d)


def perturbed_params(spec, seed):
    """Glorot weights plus non-zero biases (so the bias gradients matter)."""
    rng = np.random.default_rng(seed + 100)
    p = ref.init_params(spec, seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in p.items()}


def check_grad(spec, params, x, y, tol=1e-6):
    value, grads = ref.loss_and_grad(spec, params, x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(ref.loss(spec, params, x, y), rel=1e-14, abs=1e-14)
    assert list(grads) == list(spec.param_shapes)
    fd = ref.finite_difference_grad(lambda q: ref.loss(spec, q, x, y), params)
    for k, shape in spec.param_shapes.items():
        assert grads[k].shape == tuple(shape)
        assert grads[k].dtype == np.float64
        assert rel_err(grads[k], fd[k]) <= tol, (k, rel_err(grads[k], fd[k]))


@pytest.mark.parametrize("act,loss", list(itertools.product(ACTS, LOSSES)))
def test_grad_matches_finite_differences(act, loss):
    spec = mlp(act, loss, l2=0.03)
    params = perturbed_params(spec, 1)
    x, y = ref.random_batch(spec, 7, seed=2)
    check_grad(spec, params, x, y)


@pytest.mark.parametrize("act,alpha", [("leaky_relu", 0.2), ("elu", 0.5)])
def test_alpha_option(act, alpha):
    spec = mlp(act, "mse", alpha=alpha)
    assert spec.layers[0].alpha == alpha
    params = perturbed_params(spec, 3)
    x, y = ref.random_batch(spec, 7, seed=4)
    check_grad(spec, params, x, y)
    z = np.array([-2.0, -0.5, 0.5])
    expect = {"leaky_relu": [-2 * alpha, -0.5 * alpha, 0.5],
              "elu": [alpha * math.expm1(-2), alpha * math.expm1(-0.5), 0.5]}[act]
    assert np.allclose(ref.activation(act, z, alpha), expect)


def test_hand_computed_losses():
    spec = load_spec({"name": "t", "input": {"features": 2},
                      "layers": [{"type": "dense", "units": 2}],
                      "loss": "softmax_cross_entropy"})
    p = {"l0.W": np.eye(2), "l0.b": np.zeros(2)}
    x = np.array([[1.0, 2.0], [0.0, 0.0]])
    y = np.array([1, 0])
    expect = 0.5 * (-math.log(math.exp(2) / (math.exp(1) + math.exp(2))) + math.log(2))
    assert ref.loss(spec, p, x, y) == pytest.approx(expect, rel=1e-14)

    spec = load_spec({"name": "t", "input": {"features": 2},
                      "layers": [{"type": "dense", "units": 2}], "loss": "mse"})
    yt = np.array([[0.0, 0.0], [1.0, -1.0]])
    assert ref.loss(spec, p, x, yt) == pytest.approx(0.5 * (5 + 2) / 2, rel=1e-14)

    spec = load_spec({"name": "t", "input": {"features": 2},
                      "layers": [{"type": "dense", "units": 2}],
                      "loss": "sigmoid_binary_cross_entropy"})
    yb = np.array([[0.25, 1.0], [0.0, 0.5]])
    s = 1 / (1 + np.exp(-x))
    per = -(yb * np.log(s) + (1 - yb) * np.log(1 - s))
    assert ref.loss(spec, p, x, yb) == pytest.approx(per.sum() / 2, rel=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_extreme_logits_are_finite(loss):
    spec = mlp("tanh", loss)
    big = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]])
    y = {"mse": np.zeros((2, 3)), "softmax_cross_entropy": np.array([1, 0]),
         "sigmoid_binary_cross_entropy": np.array([[1.0, 0.0, 0.5], [1.0, 0.0, 0.0]])}[loss]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        v = ref.loss_from_output(spec, big, y)
        g = ref.output_grad(spec, big, y)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    if loss == "softmax_cross_entropy":
        # row 0: lse = 1000, -log p[1] = 2000; row 1: lse = 1000 + log 2
        assert v == pytest.approx(0.5 * (2000.0 + 2000.0 + math.log(2)), rel=1e-12)
    if loss == "sigmoid_binary_cross_entropy":
        # per unit softplus(o) - y o: row 0: 0, 0, log 2; row 1: 1000, 1000, 1000
        assert v == pytest.approx((math.log(2) + 3000.0) / 2, rel=1e-12)

    # and through a whole network with huge weights
    params = {k: 300.0 * np.sign(v + 1e-3) for k, v in perturbed_params(spec, 0).items()}
    x, yy = ref.random_batch(spec, 4, seed=0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grads = ref.loss_and_grad(spec, params, x, yy)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_l2_regularization_included():
    spec0 = mlp("tanh", "mse")
    spec = mlp("tanh", "mse", l2=0.7)
    params = perturbed_params(spec, 5)
    x, y = ref.random_batch(spec, 7, seed=6)
    w2 = sum(float(np.sum(v ** 2)) for k, v in params.items() if k.endswith(".W"))
    assert ref.loss(spec, params, x, y) == pytest.approx(
        ref.loss(spec0, params, x, y) + 0.5 * 0.7 * w2, rel=1e-13)
    _, g0 = ref.loss_and_grad(spec0, params, x, y)
    _, g = ref.loss_and_grad(spec, params, x, y)
    for k in params:
        extra = 0.7 * params[k] if k.endswith(".W") else 0.0
        assert np.allclose(g[k], g0[k] + extra, rtol=1e-13, atol=1e-15)
    # once per batch, not per sample: doubling the batch keeps the l2 term
    x2, y2 = np.concatenate([x, x]), np.concatenate([y, y])
    assert ref.loss(spec, params, x2, y2) == pytest.approx(ref.loss(spec, params, x, y))


@pytest.mark.parametrize("loss", LOSSES)
def test_image_input_with_flatten(loss):
    spec = load_spec({"name": "img", "input": {"channels": 2, "height": 3, "width": 2},
                      "layers": [{"type": "flatten"},
                                 {"type": "dense", "units": 4, "activation": "silu"},
                                 {"type": "dense", "units": 3}],
                      "loss": loss, "regularization": {"l2": 0.01}})
    assert spec.param_shapes["l1.W"] == (12, 4)
    params = perturbed_params(spec, 7)
    x, y = ref.random_batch(spec, 5, seed=8)
    assert x.shape == (5, 2, 3, 2)
    out = ref.forward(spec, params, x)
    a = x.reshape(5, 12) @ params["l1.W"] + params["l1.b"]
    a = a / (1 + np.exp(-a))
    assert np.allclose(out, a @ params["l2.W"] + params["l2.b"], rtol=1e-13)
    check_grad(spec, params, x, y)


def test_forward_matches_manual_and_casts():
    spec = mlp("tanh", "mse")
    params = {k: v.astype(np.float32) for k, v in perturbed_params(spec, 9).items()}
    x, _ = ref.random_batch(spec, 3, seed=1)
    x32 = x.astype(np.float32)
    out = ref.forward(spec, params, x32)
    assert out.dtype == np.float64 and out.shape == (3, 3)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    a = np.tanh(x32.astype(np.float64) @ p["l0.W"] + p["l0.b"])
    a = np.tanh(a @ p["l1.W"] + p["l1.b"])
    assert np.allclose(out, a @ p["l2.W"] + p["l2.b"], rtol=1e-14)
    # inputs are not modified
    before = {k: v.copy() for k, v in params.items()}
    ref.loss_and_grad(spec, params, x32, np.zeros((3, 3)))
    assert all(np.array_equal(before[k], params[k]) for k in params)


def test_init_params_and_random_batch():
    spec = load_spec({"name": "t", "dtype": "float32", "input": {"features": 5},
                      "layers": [{"type": "dense", "units": 4, "activation": "relu"},
                                 {"type": "dense", "units": 3}],
                      "loss": "softmax_cross_entropy"})
    p = ref.init_params(spec, seed=0)
    assert list(p) == list(spec.param_shapes)
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.all(p["l0.b"] == 0) and np.all(p["l1.b"] == 0)
    assert np.max(np.abs(p["l0.W"])) <= math.sqrt(6 / 9)
    assert np.max(np.abs(p["l1.W"])) <= math.sqrt(6 / 7)
    rng = np.random.default_rng(0)
    w0 = rng.uniform(-math.sqrt(6 / 9), math.sqrt(6 / 9), size=(5, 4))
    w1 = rng.uniform(-math.sqrt(6 / 7), math.sqrt(6 / 7), size=(4, 3))
    assert np.array_equal(p["l0.W"], w0.astype(np.float32))
    assert np.array_equal(p["l1.W"], w1.astype(np.float32))
    assert all(np.array_equal(p[k], v) for k, v in ref.init_params(spec, 0).items())
    assert not np.array_equal(ref.init_params(spec, 1)["l0.W"], p["l0.W"])

    x, y = ref.random_batch(spec, 6, seed=3)
    assert x.shape == (6, 5) and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int64 and y.min() >= 0 and y.max() < 3
    spec_b = mlp("tanh", "sigmoid_binary_cross_entropy")
    _, yb = ref.random_batch(spec_b, 6, seed=3)
    assert yb.shape == (6, 3) and yb.min() >= 0 and yb.max() <= 1


def test_flatten_and_fd_jacobian():
    spec = mlp("gelu", "mse")
    params = perturbed_params(spec, 11)
    v = ref.flatten_params(spec, params)
    n = sum(math.prod(s) for s in spec.param_shapes.values())
    assert v.shape == (n,)
    assert np.array_equal(v[:20], params["l0.W"].ravel())
    back = ref.unflatten_params(spec, v)
    assert all(np.array_equal(back[k], params[k]) for k in params)

    x, y = ref.random_batch(spec, 7, seed=12)
    # Jacobian of the output w.r.t. the last layer's params is known exactly
    def out_fn(q):
        full = dict(params, **q)
        return ref.forward(spec, full, x)
    last = {"l2.W": params["l2.W"], "l2.b": params["l2.b"]}
    jac = ref.finite_difference_jacobian(out_fn, last)
    assert jac.shape == (7 * 3, 3 * 3 + 3)
    a = ref.activation("gelu", ref.activation("gelu", x @ params["l0.W"] + params["l0.b"])
                       @ params["l1.W"] + params["l1.b"])
    exact = np.zeros((7, 3, 12))
    for i in range(3):                       # out[n, k] = sum_i a[n, i] W[i, k] + b[k]
        for k in range(3):
            exact[:, k, i * 3 + k] = a[:, i]
    for k in range(3):
        exact[:, k, 9 + k] = 1.0
    assert rel_err(jac, exact.reshape(21, 12)) <= 1e-8

    # FD Hessian: d2/db2 of the mean of 0.5|o - y|^2 w.r.t. the last bias is I
    h = ref.finite_difference_hessian(spec, params, x, y)
    assert h.shape == (n, n)
    nb = slice(n - 3, n)
    assert np.allclose(h[nb, nb], np.eye(3), atol=1e-7)   # d2/db2 of mean 0.5|o-y|^2


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivatives(act):
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal(50) * 3, [-7.5, -0.3, 0.3, 4.2]])
    z = z[np.abs(z) > 1e-3]                   # keep away from the kinks
    alpha = {"leaky_relu": 0.1, "elu": 1.3}.get(act)
    f, d1, d2 = (lambda w, o=o: getattr(ref, o)(act, w, alpha)
                 for o in ("activation", "activation_grad", "activation_grad2"))
    eps = 1e-6
    assert rel_err(d1(z), (f(z + eps) - f(z - eps)) / (2 * eps)) <= 1e-7
    assert rel_err(d2(z), (d1(z + eps) - d1(z - eps)) / (2 * eps)) <= 1e-7
    # kinks: right-hand derivative, zero second derivative
    zero = np.zeros(1)
    if act in ("relu", "leaky_relu", "elu"):
        assert d1(zero)[0] == 1.0 and d2(zero)[0] == 0.0
    # extreme arguments: finite, no floating-point warnings
    big = np.array([-1e300, -1000.0, -50.0, 50.0, 1000.0, 1e300])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for fn in (f, d1, d2):
            vals = fn(big)
            assert np.all(np.isfinite(vals)), (act, fn(big))


def test_activation_values():
    z = np.array([-2.0, 0.0, 1.5])
    s = 1 / (1 + np.exp(-z))
    erf = np.vectorize(math.erf)
    expect = {
        "identity": z, "sigmoid": s, "tanh": np.tanh(z),
        "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, 0.01 * z),
        "elu": np.where(z > 0, z, np.exp(z) - 1), "softplus": np.log1p(np.exp(z)),
        "silu": z * s, "gelu": 0.5 * z * (1 + erf(z / math.sqrt(2))),
    }
    for act, e in expect.items():
        assert np.allclose(ref.activation(act, z), e, rtol=1e-14, atol=1e-15), act


def test_bad_arguments_raise_value_error():
    spec = mlp("tanh", "softmax_cross_entropy")
    params = ref.init_params(spec)
    x, y = ref.random_batch(spec, 4)
    with pytest.raises(ValueError, match="l0.W"):
        ref.loss(spec, {k: v for k, v in params.items() if k != "l0.W"}, x, y)
    with pytest.raises(ValueError, match="x: expected"):
        ref.loss(spec, params, x[:, :4], y)
    with pytest.raises(ValueError, match="labels"):
        ref.loss(spec, params, x, y + 3)
