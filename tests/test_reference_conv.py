"""Unit checks of the reference image layers (bpgen.reference.conv): conv2d,
maxpool2d and avgpool2d, called directly with stub layer objects.

Forward and backward are checked against an independent vectorised
formulation (an im2col gathered with index arrays, contracted with
np.einsum, scattered back with np.add.at) and, for conv2d, against direct
scalar loops; against PyTorch when it is importable; and the backward pass
against central finite differences of sum(out * cotangent) with respect to
the input, W and b, over several option sets (kernel 1 and 3, stride 1 and
2, padding 0 and 1, strides that leave input rows unread, overlapping and
whole-map pooling).  Max-pooling's ties go to the first maximum."""
import types

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.reference import conv

# (N, C, H, W, F, k, s, pad, activation, alpha)
CONV_CASES = [
    (2, 2, 5, 5, 3, 3, 1, 0, "identity", None),
    (2, 2, 5, 6, 3, 3, 1, 1, "tanh", None),
    (2, 1, 7, 7, 2, 3, 2, 0, "identity", None),      # H=7, k=3, s=2
    (2, 2, 8, 7, 2, 3, 2, 0, "softplus", None),      # (H - k) % s != 0: last row unread
    (1, 2, 7, 6, 3, 3, 2, 1, "elu", 0.7),            # stride 2 with padding, odd sizes
    (2, 3, 5, 5, 2, 1, 1, 0, "sigmoid", None),       # kernel 1
    (2, 2, 5, 4, 2, 1, 2, 0, "identity", None),      # kernel 1, stride 2: rows unread
    (1, 2, 3, 5, 2, 1, 1, 1, "tanh", None),          # kernel 1 with padding: b-only border
    (2, 1, 3, 3, 2, 3, 1, 0, "leaky_relu", 0.1),     # a 1x1 output
]

# (N, C, H, W, size, stride)
POOL_CASES = [
    (2, 2, 4, 6, 2, 2),
    (2, 2, 7, 7, 3, 2),          # overlapping windows
    (2, 1, 8, 7, 3, 2),          # overlapping, (H - k) % s != 0
    (1, 2, 5, 5, 2, 1),          # overlapping, stride 1
    (2, 3, 5, 5, 5, 5),          # a 1x1 map: the window is the whole image
    (1, 2, 6, 5, 3, 3),          # odd width, last column unread
]

POOL_TYPES = ["maxpool2d", "avgpool2d"]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def out_size(size, k, s, pad=0):
    return (size + 2 * pad - k) // s + 1


def conv_stub(c, h, w, f, k, s, pad, act="identity", alpha=None):
    return types.SimpleNamespace(type="conv2d", name="conv", in_shape=(c, h, w),
                                 filters=f, kernel=k, stride=s, padding=pad,
                                 activation=act, alpha=alpha)


def pool_stub(kind, c, h, w, size, stride):
    return types.SimpleNamespace(type=kind, name="pool", in_shape=(c, h, w),
                                 size=size, stride=stride)


def conv_sample(case, seed):
    n, c, h, w, f, k, s, pad, act, alpha = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    p = {"W": 0.5 * rng.standard_normal((f, c, k, k)), "b": rng.standard_normal(f)}
    ho, wo = out_size(h, k, s, pad), out_size(w, k, s, pad)
    cot = rng.standard_normal((n, f, ho, wo))
    return conv_stub(c, h, w, f, k, s, pad, act, alpha), x, p, cot


def pool_sample(kind, case, seed):
    n, c, h, w, size, stride = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    cot = rng.standard_normal((n, c, out_size(h, size, stride), out_size(w, size, stride)))
    return pool_stub(kind, c, h, w, size, stride), x, cot


def run(layer, p, x, cot):
    out, cache = ref.LAYER_FORWARD[layer.type](layer, p, x)
    d_in, grads = ref.LAYER_BACKWARD[layer.type](layer, p, cache, cot)
    return out, d_in, grads


# --------------------------------------------------------------------------
# the independent formulation: gather every window at once with index arrays

def window_index(size_h, size_w, k, s):
    """Index arrays selecting windows (Ho, Wo, k, k) out of an (H, W) map."""
    ho, wo = out_size(size_h, k, s), out_size(size_w, k, s)
    rows = s * np.arange(ho)[:, None] + np.arange(k)[None, :]       # (Ho, k)
    cols = s * np.arange(wo)[:, None] + np.arange(k)[None, :]       # (Wo, k)
    return rows[:, None, :, None], cols[None, :, None, :]


def im2col(x, k, s):
    r, c = window_index(x.shape[2], x.shape[3], k, s)
    return x[:, :, r, c]                                            # (N, C, Ho, Wo, k, k)


def col2im(cols, shape, k, s):
    out = np.zeros(shape)
    r, c = window_index(shape[2], shape[3], k, s)
    np.add.at(out, (slice(None), slice(None), r, c), cols)
    return out


def conv_vectorised(layer, p, x, cot):
    k, s, pad = layer.kernel, layer.stride, layer.padding
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    patches = im2col(xpad, k, s)
    z = np.einsum("ncijuv,fcuv->nfij", patches, p["W"]) + p["b"][None, :, None, None]
    out = ref.activation(layer.activation, z, layer.alpha)
    delta = cot * ref.activation_grad(layer.activation, z, layer.alpha)
    dw = np.einsum("nfij,ncijuv->fcuv", delta, patches)
    db = np.einsum("nfij->f", delta)
    dxpad = col2im(np.einsum("nfij,fcuv->ncijuv", delta, p["W"]), xpad.shape, k, s)
    h, w = x.shape[2:]
    return out, dxpad[:, :, pad:pad + h, pad:pad + w], {"W": dw, "b": db}


def conv_direct_z(layer, p, x):
    """z by the definition, one scalar at a time (bounds-checked padding)."""
    k, s, pad = layer.kernel, layer.stride, layer.padding
    n, c, h, w = x.shape
    f = p["W"].shape[0]
    ho, wo = out_size(h, k, s, pad), out_size(w, k, s, pad)
    z = np.zeros((n, f, ho, wo))
    for b_ in range(n):
        for f_ in range(f):
            for i in range(ho):
                for j in range(wo):
                    total = p["b"][f_]
                    for c_ in range(c):
                        for u in range(k):
                            for v in range(k):
                                r, q = i * s + u - pad, j * s + v - pad
                                if 0 <= r < h and 0 <= q < w:
                                    total += p["W"][f_, c_, u, v] * x[b_, c_, r, q]
                    z[b_, f_, i, j] = total
    return z


def pool_vectorised(layer, x, cot):
    k, s = layer.size, layer.stride
    patches = im2col(x, k, s)
    flat = patches.reshape(patches.shape[:4] + (k * k,))
    if layer.type == "avgpool2d":
        out = flat.mean(axis=-1)
        dcols = np.broadcast_to(cot[..., None, None] / (k * k), patches.shape)
    else:
        out = flat.max(axis=-1)
        onehot = np.arange(k * k) == np.argmax(flat, axis=-1)[..., None]   # first max
        dcols = (onehot * cot[..., None]).reshape(patches.shape)
    return out, col2im(dcols, x.shape, k, s)


# --------------------------------------------------------------------------
# registration, shapes, inputs untouched

def test_registered():
    assert ref.LAYER_FORWARD["conv2d"] is conv._conv2d_forward
    assert ref.LAYER_BACKWARD["conv2d"] is conv._conv2d_backward
    assert ref.LAYER_FORWARD["maxpool2d"] is conv._maxpool2d_forward
    assert ref.LAYER_BACKWARD["maxpool2d"] is conv._maxpool2d_backward
    assert ref.LAYER_FORWARD["avgpool2d"] is conv._avgpool2d_forward
    assert ref.LAYER_BACKWARD["avgpool2d"] is conv._avgpool2d_backward
    for t in ("conv2d", "maxpool2d", "avgpool2d"):
        assert t not in ref.RECURRENT_TYPES


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_shapes_and_inputs_untouched(case):
    layer, x, p, cot = conv_sample(case, 0)
    copies = (x.copy(), p["W"].copy(), p["b"].copy(), cot.copy())
    out, d_in, grads = run(layer, p, x, cot)
    n, c, h, w, f, k, s, pad = case[:8]
    assert out.shape == (n, f, out_size(h, k, s, pad), out_size(w, k, s, pad))
    assert d_in.shape == x.shape and set(grads) == {"W", "b"}
    assert grads["W"].shape == p["W"].shape and grads["b"].shape == p["b"].shape
    for arr in (out, d_in, grads["W"], grads["b"]):
        assert arr.dtype == np.float64
    for a, b in zip((x, p["W"], p["b"], cot), copies):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", POOL_TYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_shapes_and_inputs_untouched(kind, case):
    layer, x, cot = pool_sample(kind, case, 0)
    copies = (x.copy(), cot.copy())
    out, d_in, grads = run(layer, {}, x, cot)
    assert out.shape == cot.shape and d_in.shape == x.shape and grads == {}
    assert out.dtype == np.float64 and d_in.dtype == np.float64
    assert np.array_equal(x, copies[0]) and np.array_equal(cot, copies[1])


def test_integer_input_is_cast():
    layer = conv_stub(1, 3, 3, 1, 2, 1, 0)
    p = {"W": np.ones((1, 1, 2, 2)), "b": np.zeros(1)}
    x = np.arange(9).reshape(1, 1, 3, 3)
    out, _ = ref.LAYER_FORWARD["conv2d"](layer, p, x)
    assert out.dtype == np.float64
    assert np.array_equal(out[0, 0], [[8.0, 12.0], [20.0, 24.0]])


def test_bad_shapes_are_refused():
    layer = conv_stub(2, 5, 5, 3, 3, 1, 0)
    p = {"W": np.zeros((3, 2, 3, 3)), "b": np.zeros(3)}
    with pytest.raises(ValueError):
        ref.LAYER_FORWARD["conv2d"](layer, p, np.zeros((1, 2, 5)))         # not 4-D
    with pytest.raises(ValueError):
        ref.LAYER_FORWARD["conv2d"](layer, p, np.zeros((1, 3, 5, 5)))      # channels
    with pytest.raises(ValueError):
        ref.LAYER_FORWARD["conv2d"](conv_stub(2, 2, 2, 3, 3, 1, 0), p,
                                    np.zeros((1, 2, 2, 2)))                 # kernel too big
    with pytest.raises(ValueError):
        ref.LAYER_FORWARD["maxpool2d"](pool_stub("maxpool2d", 1, 2, 2, 3, 3), {},
                                       np.zeros((1, 1, 2, 2)))


def test_documented_defaults():
    """stride 1 and padding 0 for conv2d, stride = size for pooling, when None."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 6, 6))
    p = {"W": rng.standard_normal((3, 2, 3, 3)), "b": rng.standard_normal(3)}
    explicit = conv_stub(2, 6, 6, 3, 3, 1, 0)
    implicit = conv_stub(2, 6, 6, 3, 3, None, None)
    a, _ = ref.LAYER_FORWARD["conv2d"](explicit, p, x)
    b, _ = ref.LAYER_FORWARD["conv2d"](implicit, p, x)
    assert np.array_equal(a, b)
    for kind in POOL_TYPES:
        a, _ = ref.LAYER_FORWARD[kind](pool_stub(kind, 2, 6, 6, 2, 2), {}, x)
        b, _ = ref.LAYER_FORWARD[kind](pool_stub(kind, 2, 6, 6, 2, None), {}, x)
        assert a.shape == (2, 2, 3, 3) and np.array_equal(a, b)


# --------------------------------------------------------------------------
# against the independent formulations

@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_vectorised(case):
    layer, x, p, cot = conv_sample(case, 1)
    out, d_in, grads = run(layer, p, x, cot)
    out2, d_in2, grads2 = conv_vectorised(layer, p, x, cot)
    assert rel_err(out, out2) <= 1e-13
    assert rel_err(d_in, d_in2) <= 1e-13
    assert rel_err(grads["W"], grads2["W"]) <= 1e-13
    assert rel_err(grads["b"], grads2["b"]) <= 1e-13


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_direct_loops(case):
    layer, x, p, _ = conv_sample(case, 2)
    out, _ = ref.LAYER_FORWARD["conv2d"](layer, p, x)
    z = conv_direct_z(layer, p, x)
    assert rel_err(out, ref.activation(layer.activation, z, layer.alpha)) <= 1e-13


@pytest.mark.parametrize("kind", POOL_TYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_matches_vectorised(kind, case):
    layer, x, cot = pool_sample(kind, case, 1)
    out, d_in, _ = run(layer, {}, x, cot)
    out2, d_in2 = pool_vectorised(layer, x, cot)
    assert rel_err(out, out2) <= 1e-14
    assert rel_err(d_in, d_in2) <= 1e-14


def test_conv_unread_rows_get_no_gradient():
    """H=8, k=3, s=2: windows cover rows 0..6, so row 7 is never read."""
    layer, x, p, cot = conv_sample((2, 2, 8, 7, 2, 3, 2, 0, "tanh", None), 3)
    _, d_in, _ = run(layer, p, x, cot)
    assert np.all(d_in[:, :, 7, :] == 0.0)
    assert np.all(d_in[:, :, :7, :] != 0.0)


def test_conv_padding_border_is_bias_only():
    """kernel 1, padding 1: the border outputs read only zeros -> act(b)."""
    layer, x, p, cot = conv_sample((1, 2, 3, 5, 2, 1, 1, 1, "identity", None), 4)
    out, _ = ref.LAYER_FORWARD["conv2d"](layer, p, x)
    border = np.ones(out.shape[2:], dtype=bool)
    border[1:-1, 1:-1] = False
    for f in range(2):
        assert np.all(out[0, f][border] == p["b"][f])


# --------------------------------------------------------------------------
# max-pooling ties and accumulation (exact values)

def test_maxpool_tie_routes_to_first_in_row_major_order():
    layer = pool_stub("maxpool2d", 1, 2, 2, 2, 2)
    x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])
    out, cache = ref.LAYER_FORWARD["maxpool2d"](layer, {}, x)
    assert out[0, 0, 0, 0] == 5.0
    d_in, _ = ref.LAYER_BACKWARD["maxpool2d"](layer, {}, cache, np.array([[[[3.0]]]]))
    assert np.array_equal(d_in, [[[[0.0, 3.0], [0.0, 0.0]]]])


def test_maxpool_constant_input_routes_to_window_corners():
    """All equal, size 3 stride 2 (overlapping): every window's error goes to
    its top-left element, nowhere else."""
    layer = pool_stub("maxpool2d", 2, 7, 7, 3, 2)
    x = np.full((2, 2, 7, 7), 0.25)
    cot = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    out, cache = ref.LAYER_FORWARD["maxpool2d"](layer, {}, x)
    assert np.all(out == 0.25)
    d_in, _ = ref.LAYER_BACKWARD["maxpool2d"](layer, {}, cache, cot)
    expected = np.zeros_like(x)
    expected[:, :, 0:6:2, 0:6:2] = cot
    assert np.array_equal(d_in, expected)


def test_maxpool_overlap_accumulates():
    """A maximum shared by four overlapping windows receives all four errors."""
    layer = pool_stub("maxpool2d", 1, 5, 5, 3, 2)
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 9.0                                # in every window
    cot = np.array([[[[1.0, 2.0], [4.0, 8.0]]]])
    out, cache = ref.LAYER_FORWARD["maxpool2d"](layer, {}, x)
    assert np.all(out == 9.0)
    d_in, _ = ref.LAYER_BACKWARD["maxpool2d"](layer, {}, cache, cot)
    expected = np.zeros_like(x)
    expected[0, 0, 2, 2] = 15.0
    assert np.array_equal(d_in, expected)


def test_avgpool_overlap_accumulates():
    """Unit errors: each input receives (windows covering it) / k^2."""
    layer = pool_stub("avgpool2d", 1, 7, 7, 3, 2)
    out, cache = ref.LAYER_FORWARD["avgpool2d"](layer, {}, np.ones((1, 1, 7, 7)))
    assert np.allclose(out, 1.0, rtol=0, atol=1e-15)
    d_in, _ = ref.LAYER_BACKWARD["avgpool2d"](layer, {}, cache, np.ones((1, 1, 3, 3)))
    cover = np.array([1, 1, 2, 1, 2, 1, 1], dtype=float)   # windows [0,3) [2,5) [4,7)
    assert np.allclose(d_in[0, 0], np.outer(cover, cover) / 9.0, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------
# backward against central finite differences of sum(out * cot)

def fd_check(layer, p, x, cot, eps=1e-6):
    fwd = ref.LAYER_FORWARD[layer.type]

    def f(q):
        out, _ = fwd(layer, {k: v for k, v in q.items() if k != "x"}, q["x"])
        return float(np.sum(out * cot))

    _, d_in, grads = run(layer, p, x, cot)
    numeric = ref.finite_difference_grad(f, {"x": x, **p}, eps)
    assert rel_err(d_in, numeric["x"]) <= 1e-7
    for name in p:
        assert rel_err(grads[name], numeric[name]) <= 1e-7, name


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_matches_finite_differences(case):
    layer, x, p, cot = conv_sample(case, 6)
    fd_check(layer, p, x, cot)


@pytest.mark.parametrize("kind", POOL_TYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_backward_matches_finite_differences(kind, case):
    layer, x, cot = pool_sample(kind, case, 6)
    fd_check(layer, {}, x, cot)


# --------------------------------------------------------------------------
# against PyTorch (skipped when torch is not importable)

def torch_act(torch, name, t, alpha):
    fn = torch.nn.functional
    return {"identity": lambda: t,
            "tanh": lambda: torch.tanh(t),
            "sigmoid": lambda: torch.sigmoid(t),
            "softplus": lambda: fn.softplus(t),
            "elu": lambda: fn.elu(t, alpha=alpha),
            "leaky_relu": lambda: fn.leaky_relu(t, alpha)}[name]()


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(case):
    torch = pytest.importorskip("torch")
    layer, x, p, cot = conv_sample(case, 7)
    out, d_in, grads = run(layer, p, x, cot)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(p["W"], requires_grad=True)
    tb = torch.tensor(p["b"], requires_grad=True)
    z = torch.nn.functional.conv2d(tx, tw, tb, stride=layer.stride, padding=layer.padding)
    tout = torch_act(torch, layer.activation, z, layer.alpha)
    (tout * torch.tensor(cot)).sum().backward()
    assert rel_err(out, tout.detach().numpy()) <= 1e-13
    assert rel_err(d_in, tx.grad.numpy()) <= 1e-13
    assert rel_err(grads["W"], tw.grad.numpy()) <= 1e-13
    assert rel_err(grads["b"], tb.grad.numpy()) <= 1e-13


def torch_pool(torch, layer, tx):
    fn = torch.nn.functional.max_pool2d if layer.type == "maxpool2d" \
        else torch.nn.functional.avg_pool2d
    return fn(tx, kernel_size=layer.size, stride=layer.stride)


@pytest.mark.parametrize("kind", POOL_TYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_matches_torch(kind, case):
    torch = pytest.importorskip("torch")
    layer, x, cot = pool_sample(kind, case, 7)
    out, d_in, _ = run(layer, {}, x, cot)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch_pool(torch, layer, tx)
    (tout * torch.tensor(cot)).sum().backward()
    assert rel_err(out, tout.detach().numpy()) <= 1e-14
    assert rel_err(d_in, tx.grad.numpy()) <= 1e-14


def test_maxpool_ties_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, size=(2, 2, 7, 7)).astype(np.float64)   # many ties
    cot = rng.standard_normal((2, 2, 3, 3))
    layer = pool_stub("maxpool2d", 2, 7, 7, 3, 2)
    out, d_in, _ = run(layer, {}, x, cot)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch_pool(torch, layer, tx)
    (tout * torch.tensor(cot)).sum().backward()
    assert np.array_equal(out, tout.detach().numpy())
    assert rel_err(d_in, tx.grad.numpy()) <= 1e-15
