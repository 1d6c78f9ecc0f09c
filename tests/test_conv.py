"""Convolutional networks: conv2d, maxpool2d, avgpool2d and flatten over
image inputs, every option through every oracle: the independent reference
(plain loops), central finite differences, and NumPy against C, in both
dtypes (the default run builds each case's C module in one dtype, half of
them in each: conftest.DEFAULT_SAMPLE; --full both).  Odd sizes on purpose: strides that do not divide, 1x1 kernels,
overlapping windows, a pooled map of 1x1, several input channels.
Second order (hvp, hessian, ggn_vp, diag, blocks, factors) is covered by
the conv cases of test_second_order.py."""
import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, fd_grad, rel_err, sample_point
from bpgen.spec import SpecError, load_spec


def _net(name, image, layers, loss="softmax_cross_entropy", out=3, dtype="float64", l2=0.0):
    arch = {"name": name, "dtype": dtype,
            "input": dict(zip(("channels", "height", "width"), image)),
            "layers": layers + [{"type": "flatten"}, {"type": "dense", "units": out}],
            "loss": loss}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


CONV = "conv2d"
CASES = {
    # kernel 3, padding 1, relu; overlapping max windows (3, stride 2)
    "k3p1-relu-max3s2": ((2, 7, 6), [
        {"type": CONV, "filters": 3, "kernel": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool2d", "size": 3, "stride": 2}], {}),
    # stride 2 that does not divide (7 -> 3), tanh, average 2x2
    "k3s2-tanh-avg": ((1, 7, 7), [
        {"type": CONV, "filters": 2, "kernel": 3, "stride": 2, "activation": "tanh"},
        {"type": "avgpool2d", "size": 2, "stride": 1}], {"loss": "mse", "l2": 0.05}),
    # 1x1 kernel, then a pool over the whole map (pooled map 1x1)
    "k1-identity-maxall": ((3, 4, 5), [
        {"type": CONV, "filters": 2, "kernel": 1, "activation": "identity"},
        {"type": "maxpool2d", "size": 4}], {"loss": "sigmoid_binary_cross_entropy"}),
    # two conv stages with padding 2 and leaky relu, average then max pooling
    "two-stages": ((1, 8, 8), [
        {"type": CONV, "filters": 2, "kernel": 3, "padding": 2, "activation": "leaky_relu",
         "alpha": 0.1},
        {"type": "avgpool2d", "size": 2},
        {"type": CONV, "filters": 3, "kernel": 2, "stride": 2, "activation": "softplus"},
        {"type": "maxpool2d", "size": 2, "stride": 1}], {"l2": 0.01}),
    # pooling straight on the input, then a conv with a kernel as large as the map
    "pool-first": ((2, 6, 6), [
        {"type": "maxpool2d", "size": 2},
        {"type": CONV, "filters": 2, "kernel": 3, "activation": "sigmoid"}], {}),
    # patches large enough that C makes them in chunks of samples (emitter.py,
    # patch_chunks): 10,800 entries a sample (chunks of 3: batches of 4 are a
    # chunk and a part), then 3,888 with padding 1 (chunks of 8)
    "large-patches": ((3, 16, 16), [
        {"type": CONV, "filters": 3, "kernel": 5, "activation": "relu"},
        {"type": CONV, "filters": 4, "kernel": 3, "padding": 1, "activation": "tanh"},
        {"type": "maxpool2d", "size": 2}], {"l2": 0.01}),
    # an input gradient large enough that C makes it in chunks of samples
    # (emitter.py, col2im_chunks): the second conv's dP = Δ·W has 14,400
    # entries a sample (chunks of 2: a batch of 3 is a chunk and a part, one
    # of 4 two chunks), each chunk's col2im into its samples of dX
    "large-input-gradient": ((1, 20, 20), [
        {"type": CONV, "filters": 4, "kernel": 5, "activation": "relu"},
        {"type": CONV, "filters": 3, "kernel": 5, "activation": "tanh"},
        {"type": "maxpool2d", "size": 2}], {}),
}


def _arch(cid, dtype):
    image, layers, kw = CASES[cid]
    return _net(f"cv_{cid.replace('-', '_')}_{dtype[-2:]}", image, layers, dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("cid", list(CASES))
def test_conv_against_reference_and_fd(builder, cid, backend, dtype):
    arch = _arch(cid, dtype)
    spec, mod = load_spec(arch), builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=3, seed=5)
    ref_tol, fd_tol = TOLERANCES[dtype]
    out = mod.forward(params, x)
    assert out.dtype == np.dtype(dtype) and out.shape == (3, mod.OUTPUT_UNITS)
    assert rel_err(out, ref.forward(spec, params, x)) <= ref_tol
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert abs(value - ref_value) <= ref_tol * max(1.0, abs(ref_value))
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert g.shape == mod.PARAM_SHAPES[key] and g.dtype == np.dtype(dtype)
        assert rel_err(g, ref_grads[key]) <= ref_tol, key
        assert rel_err(g, fd[key]) <= fd_tol, key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cid", list(CASES))
def test_conv_numpy_matches_c(builder, cid, dtype):
    arch = _arch(cid, dtype)
    spec = load_spec(arch)
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    params, x, y = sample_point(spec, mn, batch=4, seed=8)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    (vn, gn), (vc, gc) = mn.loss_and_grad(params, x, y), mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    v = mn.init_params(seed=3)
    hn, hc = mn.hvp(params, x, y, v), mc.hvp(params, x, y, v)
    for key in gn:
        assert rel_err(gc[key], gn[key]) <= tol, key
        assert rel_err(hc[key], hn[key]) <= (1e-10 if dtype == "float64" else 1e-4), key


@pytest.mark.parametrize("cid, chunked", [("large-patches", {"d_l1_P": 8}),
                                           ("large-input-gradient", {"d_l1_P": 2}),
                                           ("two-stages", {})])
def test_conv_input_gradient_chunks(cid, chunked):
    """Which input gradients the C emitter makes a chunk of samples at a
    time in loss_and_grad (their only reader a col2im; at least 2,048
    entries a sample); the cases above check their values."""
    from bpgen.backends.c.emitter import col2im_chunks
    from bpgen.derivation import derive_all
    derived = derive_all(load_spec(_arch(cid, "float64")))
    assert col2im_chunks(derived.programs["loss_and_grad"]) == chunked


def test_conv_parameters_and_roles(builder):
    arch = _arch("two-stages", "float64")
    spec, mod = load_spec(arch), builder(arch, "numpy")
    assert mod.PARAM_SHAPES["l0.W"] == (2, 1, 3, 3) and mod.PARAM_SHAPES["l2.W"] == (3, 2, 2, 2)
    p = mod.init_params(seed=2)
    assert np.all(p["l0.b"] == 0)
    limit = np.sqrt(6 / (1 * 9 + 2 * 9))         # Glorot with fans C·k·k, filters·k·k
    assert np.all(np.abs(p["l0.W"]) <= limit) and np.abs(p["l0.W"]).max() > limit / 2
    assert np.array_equal(p["l2.W"], ref.init_params(spec, seed=2)["l2.W"])
    assert "l0.W" in spec.l2_keys and "l0.b" not in spec.l2_keys
    params, x, y = sample_point(spec, mod, batch=3, seed=1)
    _, grads = mod.loss_and_grad(params, x, y)
    factors = mod.grad_factors(params, x, y)
    for key in ("l0.W", "l2.W", "l5.W"):      # conv kernels as (filters, C·k·k) matrices
        u, v = factors[key]
        assert rel_err((u.T @ v).reshape(grads[key].shape), grads[key]) <= 1e-12, key


@pytest.mark.parametrize("layer, message", [
    ({"type": CONV, "filters": 2, "kernel": 9},
     r"layers\[0\]: kernel 9x9 is larger than the map 6x6"),
    ({"type": CONV, "filters": 2, "kernel": 9, "padding": 1},
     r"layers\[0\]: kernel 9x9 is larger than the padded input 8x8"),
    ({"type": "maxpool2d", "size": 7}, r"layers\[0\]: window 7x7 is larger than the map 6x6"),
    ({"type": CONV, "filters": 0, "kernel": 3}, r"layers\[0\]\.filters"),
    ({"type": CONV, "filters": 2, "kernel": 3, "padding": -1}, r"layers\[0\]\.padding"),
    ({"type": CONV, "filters": 2, "kernel": 3, "stride": 0}, r"layers\[0\]\.stride"),
    ({"type": CONV, "filters": 2}, r"layers\[0\]\.kernel: required key is missing"),
    ({"type": "avgpool2d", "size": 2, "padding": 1}, r"layers\[0\]\.padding: unknown key"),
])
def test_conv_shapes_that_do_not_fit_are_refused(layer, message):
    arch = _net("bad", (1, 6, 6), [layer])
    with pytest.raises(SpecError, match=message):
        load_spec(arch)


def test_conv_needs_an_image():
    arch = {"name": "bad", "input": {"features": 36},
            "layers": [{"type": CONV, "filters": 2, "kernel": 3}], "loss": "mse"}
    with pytest.raises(SpecError, match=r"layers\[0\]: conv2d needs an image input"):
        load_spec(arch)
