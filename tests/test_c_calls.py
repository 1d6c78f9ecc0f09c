"""The C module's call path: the per-thread workspace kept between calls
(batch sizes growing and shrinking, several threads at once), and the BLAS
thread setting."""
import concurrent.futures

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec

from conftest import mlp

ARCH = mlp("tanh", "softmax_cross_entropy", hidden=(40, 30), out=4, features=20,
           l2=0.01, name="ccalls")


def test_workspace_reuse_across_batch_sizes(builder):
    spec, mod = load_spec(ARCH), builder(ARCH, "c")
    for n in (3, 200, 1, 57, 200, 2):
        params, x, y = sample_point(spec, mod, batch=n, seed=n)
        value, grads = mod.loss_and_grad(params, x, y)
        ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
        assert abs(value - ref_value) <= 1e-12 * max(1, abs(ref_value))
        for key in grads:
            assert rel_err(grads[key], ref_grads[key]) <= 1e-10, (n, key)
    mod.release_workspace()
    assert np.isfinite(mod.loss(params, x, y))


def test_threads_each_get_their_own_workspace(builder):
    spec, mod = load_spec(ARCH), builder(ARCH, "c")
    points = [sample_point(spec, mod, batch=n, seed=n) for n in (5, 90, 17, 64)] * 4

    def run(point):
        params, x, y = point
        return rel_err(mod.flatten(mod.loss_and_grad(params, x, y)[1]),
                       mod.flatten(ref.loss_and_grad(spec, params, x, y)[1]))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(run, points))
    assert max(errors) <= 1e-10


def test_blas_threads(builder):
    spec, mod = load_spec(ARCH), builder(ARCH, "c")
    params, x, y = sample_point(spec, mod, batch=300, seed=1)
    one = mod.flatten(mod.loss_and_grad(params, x, y)[1])
    mod.set_threads(2)
    try:
        two = mod.flatten(mod.loss_and_grad(params, x, y)[1])
    finally:
        mod.set_threads(1)
    assert rel_err(two, one) <= 1e-12
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="n: expected a positive integer"):
            mod.set_threads(bad)
