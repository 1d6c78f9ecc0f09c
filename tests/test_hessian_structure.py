"""The structured Hessian of dense networks (Kronecker blocks + commutation
terms) and its exact diagonal from square-root factors, on networks deep
enough that every path of the assembly runs: curvature residuals f''·q on
every layer (the output's too), carried two and three layers down; and the
diagonal of a network far too large for its Hessian."""
import tracemalloc

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec


def _deep(loss, out_act, dtype="float64"):
    return {"name": f"deep_{loss[:3]}_{out_act}_{dtype[-2:]}", "dtype": dtype,
            "input": {"features": 3},
            "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                       {"type": "dense", "units": 3, "activation": "softplus"},
                       {"type": "dense", "units": 3, "activation": "elu", "alpha": 0.7},
                       {"type": "dense", "units": 2, "activation": out_act}],
            "loss": loss, "regularization": {"l2": 0.03}}


CASES = [("mse", "sigmoid"), ("softmax_cross_entropy", "tanh"),
         ("sigmoid_binary_cross_entropy", "identity")]


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("loss, out_act", CASES)
def test_deep_structured_hessian_diag_and_blocks(builder, backend, loss, out_act):
    arch = _deep(loss, out_act)
    spec, mod = load_spec(arch), builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=5, seed=2)
    h = mod.hessian(params, x, y)
    assert np.array_equal(h, h.T)
    assert rel_err(h, ref.finite_difference_hessian(spec, params, x, y, 1e-5)) <= 1e-6
    v = mod.init_params(seed=4)
    assert rel_err(h @ mod.flatten(v), mod.flatten(mod.hvp(params, x, y, v))) <= 1e-12
    assert rel_err(mod.flatten(mod.hessian_diag(params, x, y)), np.diag(h)) <= 1e-12
    off = 0
    for name, (keys, block) in mod.hessian_blocks(params, x, y).items():
        size = block.shape[0]
        assert np.array_equal(block, block.T)
        assert rel_err(block, h[off:off + size, off:off + size]) <= 1e-12, name
        off += size


def test_deep_float32(builder):
    arch = _deep("mse", "sigmoid", "float32")
    spec, mod = load_spec(arch), builder(arch, "c")
    params, x, y = sample_point(spec, mod, batch=5, seed=2)
    h = mod.hessian(params, x, y)
    assert h.dtype == np.float32 and np.array_equal(h, h.T)
    h64 = ref.finite_difference_hessian(spec, params, x, y, 1e-5)
    assert rel_err(h, h64) <= 1e-4
    assert rel_err(mod.flatten(mod.hessian_diag(params, x, y)), np.diag(h)) <= 1e-5


def test_diagonal_of_a_network_too_large_for_its_hessian(builder):
    arch = {"name": "wide_diag", "input": {"features": 784},
            "layers": [{"type": "dense", "units": 256, "activation": "tanh"},
                       {"type": "dense", "units": 256, "activation": "tanh"},
                       {"type": "dense", "units": 10}],
            "loss": "softmax_cross_entropy"}
    spec, mod = load_spec(arch), builder(arch, "numpy")
    params, x, y = sample_point(spec, mod, batch=128, seed=0)
    assert mod.N_PARAMS == 269322      # the Hessian: 580 GB in float64
    with pytest.raises(ValueError, match=r"hessian: the result needs 580,"):
        mod.hessian(params, x, y)
    tracemalloc.start()
    try:
        diag = mod.flatten(mod.hessian_diag(params, x, y))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**30
    rng = np.random.default_rng(0)
    for j in sorted(rng.choice(mod.N_PARAMS, 4, replace=False)) + [mod.N_PARAMS - 1]:
        e = np.zeros(mod.N_PARAMS)
        e[j] = 1
        exact = mod.flatten(mod.hvp(params, x, y, mod.unflatten(e)))[j]
        assert abs(diag[j] - exact) <= 1e-12 * max(1e-3, abs(exact)), j
