"""Numerical edge cases and non-finite inputs, both backends, both dtypes:
large logits and pre-activations stay finite everywhere (loss, gradient, hvp,
Hessian); a NaN or inf in x or y is refused with a ValueError naming it, and
one in params or v when it makes a result non-finite, the same in both
backends."""
import numpy as np
import pytest

from bpgen.check import sample_point
from bpgen.spec import ACTIVATIONS, LOSSES, load_spec

from conftest import mlp
from test_generated import _arch as _net, sampled_arch   # the same modules: built once


# ids as test_generated's (act-loss-dtype-backend): the default run takes its
# sample, every case on NumPy and the C modules test_generated builds
@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_large_values_stay_finite(builder, act, loss, dtype, backend):
    arch = _net(act, loss, dtype)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=4, seed=1)
    # pre-activations of about ±1e4 in the hidden layer, logits of ±1000 and more
    params["l0.W"] = (np.sign(params["l0.W"]) * 2.5e3).astype(dtype)
    params["l2.W"] = (np.sign(params["l2.W"]) * 1e3).astype(dtype)
    x = (np.sign(x) + (x == 0)).astype(dtype)
    value, grads = mod.loss_and_grad(params, x, y)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    hv = mod.hvp(params, x, y, mod.init_params(seed=2))
    assert all(np.all(np.isfinite(g)) for g in hv.values())
    assert np.all(np.isfinite(mod.hessian(params, x, y)))


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(builder, backend, bad):
    arch = mlp("tanh", "mse", "float64", hidden=(3,), out=2, features=2, name="hv_refuse")
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=4, seed=1)
    cases = {"x": (params, np.where(np.arange(8).reshape(4, 2) == 5, bad, x), y),
             "y": (params, x, np.where(np.arange(8).reshape(4, 2) == 3, bad, y)),
             r"params\['l1.b'\]": (dict(params, **{"l1.b": np.array([0.0, bad])}), x, y)}
    for what, (p, xx, yy) in cases.items():
        with pytest.raises(ValueError, match=f"^{what}: contains NaN or inf"):
            mod.loss_and_grad(p, xx, yy)
        with pytest.raises(ValueError, match=f"^{what}: contains NaN or inf"):
            mod.loss(p, xx, yy)
    v = mod.init_params(seed=3)
    v["l0.W"][0, 0] = bad
    with pytest.raises(ValueError, match=r"^v\['l0.W'\]: contains NaN or inf"):
        mod.hvp(params, x, y, v)
    with pytest.raises(ValueError, match=r"^x: contains NaN or inf"):
        mod.forward(params, np.full((2, 2), bad))


def test_float32_sums_accumulate_in_double_in_both_backends(builder):
    arch = sampled_arch("mse", "float32")      # a module test_generated.py builds anyway
    spec = load_spec(arch)
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    params, x, y = sample_point(spec, mn, batch=20000, seed=4)
    ln, lc = mn.loss(params, x, y), mc.loss(params, x, y)
    assert abs(ln - lc) <= 2e-6 * abs(lc) and np.isfinite(ln)
