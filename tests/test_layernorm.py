"""The ``layernorm`` layer type (added by following the README's recipe):
its gradient is derived from its composition of ``sum`` and ``map``, so it
is checked like every layer, against the reference, central finite
differences and NumPy against C, in both dtypes, on flat inputs and after a
recurrent layer (where it applies at every step).  Second order is covered
by the layernorm cases of ``test_second_order.py``."""
import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, fd_grad, rel_err, sample_point
from bpgen.spec import SpecError, load_spec


def _flat(dtype, loss="mse", l2=0.0):
    arch = {"name": f"ln_flat_{dtype[-2:]}_{loss[:3]}", "dtype": dtype,
            "input": {"features": 4},
            "layers": [{"type": "dense", "units": 5, "activation": "tanh"},
                       {"type": "layernorm", "name": "norm"},
                       {"type": "dense", "units": 3}],
            "loss": loss}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


def _seq(dtype, steps="all"):
    return {"name": f"ln_seq_{dtype[-2:]}_{steps}", "dtype": dtype,
            "input": {"features": 3, "steps": 4},
            "layers": [{"type": "gru", "units": 3}, {"type": "layernorm"},
                       {"type": "dense", "units": 2}],
            "loss": {"type": "sigmoid_binary_cross_entropy", "steps": steps}}


CASES = [("flat-mse-l2", _flat, {"loss": "mse", "l2": 0.05}),
         ("flat-sce", _flat, {"loss": "softmax_cross_entropy"}),
         ("seq-all", _seq, {"steps": "all"}),
         ("seq-last", _seq, {"steps": "last"})]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("cid, make, kw", CASES, ids=[c[0] for c in CASES])
def test_layernorm_against_reference_and_fd(builder, backend, dtype, cid, make, kw):
    arch = make(dtype, **kw)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=5, seed=4)
    # perturb the gain and bias away from their initial 1 and 0
    rng = np.random.default_rng(0)
    for lay in spec.layers:
        if lay.type == "layernorm":
            for par in lay.params:
                key = f"{lay.name}.{par.name}"
                params[key] = (params[key] + rng.normal(0, 0.3, par.shape)).astype(dtype)
    ref_tol, fd_tol = TOLERANCES[dtype]
    assert rel_err(mod.forward(params, x), ref.forward(spec, params, x)) <= ref_tol
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert abs(value - ref_value) <= ref_tol * max(1.0, abs(ref_value))
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert g.dtype == np.dtype(dtype)
        assert rel_err(g, ref_grads[key]) <= ref_tol, key
        assert rel_err(g, fd[key]) <= fd_tol, key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cid, make, kw", CASES, ids=[c[0] for c in CASES])
def test_layernorm_numpy_matches_c(builder, dtype, cid, make, kw):
    arch = make(dtype, **kw)
    spec = load_spec(arch)
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    params, x, y = sample_point(spec, mn, batch=3, seed=6)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    (vn, gn), (vc, gc) = mn.loss_and_grad(params, x, y), mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    for key in gn:
        assert rel_err(gc[key], gn[key]) <= tol, key
    v = mn.init_params(seed=9)
    hn, hc = mn.hvp(params, x, y, v), mc.hvp(params, x, y, v)
    for key in hn:
        assert rel_err(hc[key], hn[key]) <= (1e-10 if dtype == "float64" else 1e-4), key


def test_layernorm_parameters_and_roles(builder):
    arch = _flat("float64", l2=0.5)
    mod = builder(arch, "numpy")
    assert list(mod.PARAM_SHAPES)[2:4] == ["norm.g", "norm.b"]
    assert mod.PARAM_SHAPES["norm.g"] == (5,) == mod.PARAM_SHAPES["norm.b"]
    p = mod.init_params(seed=1)
    assert np.all(p["norm.g"] == 1) and np.all(p["norm.b"] == 0)
    assert np.array_equal(p["l0.W"], ref.init_params(load_spec(arch), seed=1)["l0.W"])
    # gains and biases are not weights: l2 leaves their gradients alone
    spec = load_spec(arch)
    assert "norm.g" not in spec.l2_keys and "norm.b" not in spec.l2_keys
    assert set(mod.grad_factors(p, *sample_point(spec, mod, 3, 0)[1:])) == {"l0.W", "l2.W"}


def test_layernorm_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(4, 6))
    g, b = np.linspace(0.5, 1.5, 6), np.linspace(-1, 1, 6)
    from types import SimpleNamespace
    out, _ = ref.LAYER_FORWARD["layernorm"](SimpleNamespace(in_shape=(6,), name="n"),
                                            {"g": g, "b": b}, x)
    want = torch.nn.functional.layer_norm(torch.tensor(x), (6,), torch.tensor(g),
                                          torch.tensor(b), eps=1e-5).numpy()
    assert rel_err(out, want) <= 1e-12


def test_layernorm_needs_a_flat_input():
    arch = {"name": "bad", "input": {"channels": 1, "height": 2, "width": 2},
            "layers": [{"type": "layernorm"}], "loss": "mse"}
    with pytest.raises(SpecError, match=r"layers\[0\].*flat input"):
        load_spec(arch)
    arch["layers"] = [{"type": "layernorm", "units": 3}]
    with pytest.raises(SpecError, match=r"layers\[0\]\.units: unknown key"):
        load_spec(arch)
