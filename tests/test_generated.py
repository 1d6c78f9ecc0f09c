"""Every activation x every loss x both dtypes x both backends, three ways:
against the reference implementation, against central finite differences,
and NumPy backend against C backend."""
import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, fd_grad, rel_err, sample_point
from bpgen.spec import ACTIVATIONS, LOSSES, load_spec

from conftest import DEFAULT_SAMPLE, mlp

CASES = [(act, loss, dtype) for act in ACTIVATIONS for loss in LOSSES
         for dtype in ("float64", "float32")]


def _arch(act, loss, dtype):
    # l2 on the float64 half so that the regulariser is covered everywhere
    return mlp(act, loss, dtype, l2=0.03 if dtype == "float64" else 0.0,
               name=f"n_{act}_{loss[:3]}_{dtype}")


def sampled_arch(loss, dtype):
    """A 4-5-4-3 network with ``loss`` in ``dtype`` whose C module the default
    run builds here anyway (conftest.DEFAULT_SAMPLE's C cases): for checks
    that need some small module of each loss and dtype (test_calls.py), so
    that they compile nothing of their own."""
    sample = DEFAULT_SAMPLE["test_generated.py::test_against_reference_and_fd"]
    act = next(a for a in ("tanh", *sorted(ACTIVATIONS)) if f"{a}-{loss}-{dtype}-c" in sample)
    return _arch(act, loss, dtype)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("act,loss,dtype", CASES)
def test_against_reference_and_fd(builder, backend, act, loss, dtype):
    arch = _arch(act, loss, dtype)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=6, seed=3)
    ref_tol, fd_tol = TOLERANCES[dtype]

    out = mod.forward(params, x)
    assert out.dtype == np.dtype(dtype) and out.flags.c_contiguous
    assert out.shape == (6, 3)
    assert rel_err(out, ref.forward(spec, params, x)) <= ref_tol

    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert isinstance(value, float)
    assert abs(value - ref_value) <= ref_tol * max(1.0, abs(ref_value))
    assert mod.loss(params, x, y) == pytest.approx(value, rel=ref_tol, abs=ref_tol)
    assert list(grads) == list(mod.PARAM_SHAPES)
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert g.shape == mod.PARAM_SHAPES[key]
        assert g.dtype == np.dtype(dtype) and g.flags.c_contiguous
        assert rel_err(g, ref_grads[key]) <= ref_tol, key
        assert rel_err(g, fd[key]) <= fd_tol, key


@pytest.mark.parametrize("act,loss,dtype", CASES)
def test_numpy_matches_c(builder, act, loss, dtype):
    arch = _arch(act, loss, dtype)
    spec = load_spec(arch)
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    params, x, y = sample_point(spec, mn, batch=4, seed=5)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    vn, gn = mn.loss_and_grad(params, x, y)
    vc, gc = mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    for key in gn:
        assert rel_err(gc[key], gn[key]) <= tol, key


def _assert_matches_reference(spec, mod, params, x, y):
    """float64 loss to 1e-12 and every gradient to 1e-8 of the reference."""
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert list(grads) == list(ref_grads)
    for key in grads:
        assert rel_err(grads[key], ref_grads[key]) <= 1e-8, key


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("act,alpha", [("leaky_relu", 0.2), ("elu", 0.5)])
def test_activation_alpha(builder, backend, act, alpha):
    arch = mlp(act, "mse", alpha=alpha, name=f"alpha_{act}")
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, seed=11)
    _assert_matches_reference(spec, mod, params, x, y)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("loss", LOSSES)
def test_batch_of_one(builder, backend, loss):
    arch = sampled_arch(loss, "float64")       # a module the sample builds anyway
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=1)
    _assert_matches_reference(spec, mod, params, x, y)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("loss", LOSSES)
def test_extreme_logits_are_finite(builder, backend, loss):
    """Logits of about +-1000 give a finite loss and finite gradients."""
    arch = mlp("identity", loss, hidden=(), out=3, features=2, name="extreme")
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params = {"l0.W": np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, 1000.0]]),
              "l0.b": np.zeros(3)}
    x = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    _, y = ref.random_batch(spec, 3, seed=0)
    out = mod.forward(params, x)
    assert np.abs(out).max() == 1000.0
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert np.isfinite(value) and value == pytest.approx(ref_value, rel=1e-12)
    for key in grads:
        assert np.isfinite(grads[key]).all()
        assert rel_err(grads[key], ref_grads[key]) <= 1e-10


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_image_input_with_flatten(builder, backend):
    arch = {"name": "img", "input": {"channels": 2, "height": 3, "width": 2},
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 4,
                                              "activation": "gelu"},
                       {"type": "dense", "units": 3}],
            "loss": "softmax_cross_entropy"}
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=3)
    assert x.shape == (3, 2, 3, 2)
    _assert_matches_reference(spec, mod, params, x, y)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_deep_named_network(builder, backend):
    """Five layers, custom names, every activation family in one network."""
    arch = {"name": "deep", "input": {"features": 3},
            "layers": [{"type": "dense", "units": 4, "activation": "elu", "name": "enc"},
                       {"type": "dense", "units": 4, "activation": "softplus"},
                       {"type": "dense", "units": 3, "activation": "sigmoid", "name": "mid"},
                       {"type": "dense", "units": 5, "activation": "leaky_relu"},
                       {"type": "dense", "units": 2, "name": "head"}],
            "loss": "sigmoid_binary_cross_entropy", "regularization": {"l2": 0.1}}
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert list(mod.PARAM_SHAPES) == ["enc.W", "enc.b", "l1.W", "l1.b", "mid.W", "mid.b",
                                      "l3.W", "l3.b", "head.W", "head.b"]
    params, x, y = sample_point(spec, mod, batch=7, seed=2)
    _assert_matches_reference(spec, mod, params, x, y)
