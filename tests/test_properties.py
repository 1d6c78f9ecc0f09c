"""Property tests: random small dense architectures, both backends, against
the reference implementation (float64, relative error <= 1e-8).

Architectures: 1-3 dense layers of 1-5 units, each with a random activation
(and sometimes a random alpha for leaky_relu / elu), a random loss (at least
two output units for softmax cross-entropy), l2 either 0 or small, 1-5 input
features and a batch of 1-9 samples.  Data are random normal, so no
pre-activation sits exactly on a kink.
"""
import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpgen
from bpgen import reference as ref
from bpgen.check import rel_err, sample_point
from bpgen.spec import ACTIVATIONS, LOSSES, load_spec

TOL = 1e-8
# examples of the NumPy property (each a fresh build and a reference run):
# a sample by default, as many as before with --full (tests/conftest.py);
# the C property likewise (each example a compile)
_FULL = os.environ.get("BPGEN_FULL_TESTS") == "1"
_NUMPY_EXAMPLES, _C_EXAMPLES = (25, 6) if _FULL else (5, 3)
_SETTINGS = dict(deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@st.composite
def architectures(draw):
    loss = draw(st.sampled_from(LOSSES))
    n_layers = draw(st.integers(1, 3))
    layers = []
    for i in range(n_layers):
        last = i == n_layers - 1
        units = draw(st.integers(2 if last and loss == "softmax_cross_entropy" else 1, 5))
        act = draw(st.sampled_from(sorted(ACTIVATIONS)))
        layer = {"type": "dense", "units": units, "activation": act}
        if "alpha" in ACTIVATIONS[act] and draw(st.booleans()):
            layer["alpha"] = draw(st.floats(0.05, 2.0, allow_nan=False,
                                            allow_infinity=False))
        layers.append(layer)
    arch = {"name": "prop", "dtype": "float64",
            "input": {"features": draw(st.integers(1, 5))},
            "layers": layers, "loss": loss}
    l2 = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.05]))
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


def _check(arch, module, batch, seed):
    spec = load_spec(arch)
    params, x, y = sample_point(spec, module, batch=batch, seed=seed)
    out = module.forward(params, x)
    assert out.shape == (batch, arch["layers"][-1]["units"])
    assert rel_err(out, ref.forward(spec, params, x)) <= TOL
    value, grads = module.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert type(value) is float
    assert abs(value - ref_value) <= TOL * max(1.0, abs(ref_value))
    assert abs(module.loss(params, x, y) - ref_value) <= TOL * max(1.0, abs(ref_value))
    assert list(grads) == list(module.PARAM_SHAPES) == list(spec.param_shapes)
    for key, g in grads.items():
        assert g.shape == tuple(spec.param_shapes[key]) and g.dtype == np.float64
        assert rel_err(g, ref_grads[key]) <= TOL, key
    # the flat order agrees with the reference too
    np.testing.assert_array_equal(module.flatten(params), ref.flatten_params(spec, params))


@settings(max_examples=_NUMPY_EXAMPLES, **_SETTINGS)
@given(arch=architectures(), batch=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_numpy_backend_matches_reference(builder, arch, batch, seed):
    _check(arch, builder(arch, "numpy"), batch, seed)


@settings(max_examples=_C_EXAMPLES, **_SETTINGS)
@given(arch=architectures(), batch=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_c_backend_matches_reference(arch, batch, seed):
    # each example compiles (about a second, unless cached in ~/.cache/bpgen)
    with tempfile.TemporaryDirectory(prefix="bpgen-prop-") as out:
        module = bpgen.build(arch, backend="c", out_dir=out)
        _check(arch, module, batch, seed)
