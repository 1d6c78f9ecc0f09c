"""Token embeddings, multi-head attention and residual blocks (issue 22),
data-driven like every layer: each architecture of ``CASES`` (the
transformer rows of ``test_second_order.py``, so the float64 builds are
shared, plus their float32 twins) against the reference (plain NumPy),
central finite differences and NumPy against C, in both dtypes; the
reference itself against PyTorch (``nn.MultiheadAttention``, and the whole
network with ``torch.func.hessian``) where torch is installed; validation
messages; and token ids checked by both backends and the C entry points.
Second order (Hessian against finite differences, symmetry, hessian @ v ==
hvp, hmp, diagonal, blocks, directions at once) runs in test_second_order.py."""
import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, fd_grad, rel_err, sample_point
from bpgen.spec import SpecError, load_spec

from test_second_order import CASES as SECOND_ORDER

IDS = ["attn-causal-sce-all", "attn-mse-last-l2", "block-prenorm-sce-last"]


def _arch(cid, dtype):
    arch = dict(SECOND_ORDER[cid][0])
    if dtype == "float32":
        arch.update(dtype="float32", name=arch["name"] + "_32")
    return arch


def _point(spec, mod, seed=4):
    params, x, y = sample_point(spec, mod, batch=3, seed=seed)
    rng = np.random.default_rng(seed)       # gains and tables away from 1 and Glorot
    params = {k: (v + rng.normal(0, 0.3, v.shape)).astype(v.dtype) for k, v in params.items()}
    return params, x, y


# float32 in C on the block network alone (it holds every new layer type):
# each C build costs seconds
RUNS = [pytest.param(cid, backend, dtype, id=f"{cid}-{backend}-{dtype}")
        for cid in IDS for backend in ("numpy", "c") for dtype in ("float64", "float32")
        if not (backend == "c" and dtype == "float32" and cid != IDS[-1])]


@pytest.mark.parametrize("cid, backend, dtype", RUNS)
def test_against_reference_and_fd(builder, cid, backend, dtype):
    arch = _arch(cid, dtype)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = _point(spec, mod)
    ref_tol, fd_tol = TOLERANCES[dtype]
    out = mod.forward(params, x)
    assert out.dtype == np.dtype(dtype) and out.shape == (3,) + spec.output_shape
    assert rel_err(out, ref.forward(spec, params, x)) <= ref_tol
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert abs(value - ref_value) <= ref_tol * max(1.0, abs(ref_value))
    assert mod.loss(params, x, y) == pytest.approx(value, rel=1e-6)
    fd = fd_grad(spec, mod, params, x, y)
    scale = max(float(np.max(np.abs(g))) for g in ref_grads.values())
    for key, g in grads.items():
        assert g.dtype == np.dtype(dtype) and g.shape == mod.PARAM_SHAPES[key]
        # (attention's bk has a zero gradient: compared at the whole gradient's scale)
        assert np.max(np.abs(g - ref_grads[key])) <= ref_tol * max(scale, 1.0), key
        assert np.max(np.abs(g - fd[key])) <= fd_tol * max(scale, 1.0), key
    if dtype == "float32":      # second order in float32 against the float64 module
        twin = builder(_arch(cid, "float64"), backend)
        v = {k: np.random.default_rng(1).standard_normal(s).astype(np.float32)
             for k, s in mod.PARAM_SHAPES.items()}
        hv, hv64 = mod.hvp(params, x, y, v), twin.hvp(params, x, y, v)
        scale = max(float(np.max(np.abs(a))) for a in hv64.values())
        for key in hv:
            assert hv[key].dtype == np.float32
            assert np.max(np.abs(hv[key] - hv64[key])) <= 1e-4 * scale, key


@pytest.mark.parametrize("cid, dtype", [(cid, "float64") for cid in IDS]
                         + [(IDS[-1], "float32")])
def test_numpy_matches_c(builder, cid, dtype):
    arch = _arch(cid, dtype)
    spec = load_spec(arch)
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    params, x, y = _point(spec, mn, seed=6)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    (vn, gn), (vc, gc) = mn.loss_and_grad(params, x, y), mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    scale = max(float(np.max(np.abs(g))) for g in gn.values())
    for key in gn:
        assert np.max(np.abs(gc[key] - gn[key])) <= tol * scale, key


# --------------------------------------------------------------------------
# the reference against PyTorch

def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: the PyTorch oracle "
                                               "of attention is skipped")


@pytest.mark.parametrize("causal", [False, True])
def test_reference_attention_matches_torch_multihead(causal):
    torch = _torch()
    spec = load_spec({"name": "mha", "input": {"features": 6, "steps": 5},
                      "layers": [{"type": "attention", "heads": 3, "causal": causal}],
                      "loss": "mse"})
    params = ref.init_params(spec, seed=1)
    rng = np.random.default_rng(2)
    params = {k: v + rng.normal(0, 0.2, v.shape) for k, v in params.items()}
    x = rng.standard_normal((4, 5, 6))
    p = {k.split(".")[1]: torch.tensor(v) for k, v in params.items()}
    mha = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64)
    with torch.no_grad():       # torch's weights are (out, in): ours transposed
        mha.in_proj_weight.copy_(torch.cat([p["Wq"].T, p["Wk"].T, p["Wv"].T]))
        mha.in_proj_bias.copy_(torch.cat([p["bq"], p["bk"], p["bv"]]))
        mha.out_proj.weight.copy_(p["Wo"].T)
        mha.out_proj.bias.copy_(p["bo"])
    xt = torch.tensor(x)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
    want = mha(xt, xt, xt, attn_mask=mask, need_weights=False)[0].detach().numpy()
    assert rel_err(ref.forward(spec, params, x), want) <= 1e-12


def test_module_matches_torch_to_second_order(builder):
    """The causal network (embedding with positions, attention, dense head,
    cross-entropy at every step) written in PyTorch: its loss and gradient
    (through scaled_dot_product_attention) and its Hessian (torch.func.hessian
    of the explicit composition: SDPA has no double backward) against both
    backends."""
    torch = _torch()
    arch = SECOND_ORDER["attn-causal-sce-all"][0]
    spec = load_spec(arch)
    keys = list(spec.param_shapes)

    def net(flat, x, y, sdpa):
        p, off = {}, 0
        for k, s in spec.param_shapes.items():
            n = int(np.prod(s))
            p[k.split(".", 1)[1] if k.startswith("l1.") else k] = flat[off:off + n].reshape(s)
            off += n
        a = p["l0.E"][x] + p["l0.P"]
        n, t, f = a.shape
        heads = [(a @ p[w] + p[b]).reshape(n, t, 2, f // 2).transpose(1, 2)
                 for w, b in (("Wq", "bq"), ("Wk", "bk"), ("Wv", "bv"))]
        if sdpa:
            o = torch.nn.functional.scaled_dot_product_attention(*heads, is_causal=True)
        else:
            q, k, v = heads
            s = q @ k.transpose(-1, -2) / (f // 2) ** 0.5
            s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -torch.inf)
            o = torch.softmax(s, dim=-1) @ v
        o = o.transpose(1, 2).reshape(n, t, f) @ p["Wo"] + p["bo"]
        logits = o @ p["l2.W"] + p["l2.b"]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1))

    for backend in ("numpy", "c"):
        mod = builder(arch, backend)
        params, x, y = _point(spec, mod)
        flat = torch.tensor(mod.flatten(params), requires_grad=True)
        xt, yt = torch.tensor(x), torch.tensor(y)
        loss = net(flat, xt, yt, True)
        (grad,) = torch.autograd.grad(loss, flat)
        value, grads = mod.loss_and_grad(params, x, y)
        assert abs(value - loss.item()) <= 1e-12 * abs(value)
        assert rel_err(mod.flatten(grads), grad.numpy()) <= 1e-10
        hess = torch.func.hessian(lambda f: net(f, xt, yt, False))(flat.detach()).numpy()
        assert rel_err(mod.hessian(params, x, y), hess) <= 1e-10
        assert list(mod.PARAM_SHAPES) == keys


# --------------------------------------------------------------------------
# validation and token ids

EMB = {"type": "embedding", "units": 4}
TOK = {"tokens": 7, "steps": 4}


def _spec(layers, inp=TOK):
    return {"name": "bad", "input": inp, "layers": layers, "loss": "mse"}


BAD = [
    (_spec([{"type": "dense", "units": 2}]), "layers[0]",
     "dense cannot read token ids; the first layer of a tokens input is an embedding"),
    (_spec([EMB, EMB]), "layers[1]", "embedding reads token ids: it must be the first "
                                     "layer, on an input {tokens: V, steps: T}"),
    (_spec([{"type": "embedding", "units": 4, "positions": "yes"}]), "layers[0].positions",
     "expected true or false, got 'yes'"),
    (_spec([EMB, {"type": "attention", "heads": 3}]), "layers[1].heads",
     "3 heads do not divide the 4 features"),
    (_spec([EMB, {"type": "attention"}]), "layers[1].heads", "required key is missing"),
    (_spec([EMB, {"type": "attention", "heads": 2, "causal": 1}]), "layers[1].causal",
     "expected true or false, got 1"),
    (_spec([{"type": "attention", "heads": 1}], {"features": 4}), "layers[0]",
     "attention needs a sequence of features (T, F) but gets per-sample shape (4,)"),
    (_spec([EMB, {"type": "block", "layers": []}]), "layers[1].layers",
     "expected a non-empty list of layers"),
    (_spec([EMB, {"type": "block", "residual": True,
                  "layers": [{"type": "dense", "units": 3}]}]), "layers[1].residual",
     "the block's output (4, 3) does not match its input (4, 4), so it cannot be added"),
    (_spec([EMB, {"type": "block", "layers": [{"type": "dense", "units": 3, "name": "a"},
                                              {"type": "layernorm", "name": "a"}]}]),
     "layers[1].layers[1].name", "duplicate layer name 'a' in this block (also layers[0])"),
    (_spec([EMB, {"type": "block", "layers": [{"type": "dense", "unit": 3}]}]),
     "layers[1].layers[0].unit", "unknown key"),
    (_spec([EMB, {"type": "block", "layers": [{"type": "block", "layers": [
        {"type": "attention", "heads": 5}]}]}]), "layers[1].layers[0].layers[0].heads",
     "5 heads do not divide the 4 features"),
]


_NEST = {"type": "block", "layers": [{"type": "layernorm"}] * 9}
for _ in range(3):          # 9 x 9 x 9 layers through one shared (aliased) list
    _NEST = {"type": "block", "layers": [_NEST] * 9}
BAD.append((_spec([EMB, _NEST]), "layers[1].layers[0].layers[0].layers[6]",
            "more than 64 layers in all, those inside blocks included"))


@pytest.mark.parametrize("arch, field, message", BAD, ids=[b[1] + str(i) for i, b in
                                                           enumerate(BAD)])
def test_bad_architectures_name_the_field(arch, field, message):
    with pytest.raises(SpecError) as exc:
        load_spec(arch)
    assert str(exc.value).startswith(f"<dict>: {field}: {message}")


def test_nested_names_and_l2():
    spec = load_spec(SECOND_ORDER["block-prenorm-sce-last"][0])
    keys = list(spec.param_shapes)
    assert keys[:3] == ["l0.E", "l1.l0.g", "l1.l0.b"]
    assert keys[3:11] == [f"l1.l1.{p}" for p in ("Wq", "Wk", "Wv", "Wo", "bq", "bk", "bv", "bo")]
    assert spec.l2_keys == ["l1.l1.Wq", "l1.l1.Wk", "l1.l1.Wv", "l1.l1.Wo", "l2.l1.W",
                            "l2.l2.W", "l3.W"]


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_token_ids_are_checked(builder, backend):
    arch = SECOND_ORDER["attn-causal-sce-all"][0]
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert (mod._X_DTYPE, mod._X_BOUND) == ("int64", 5)
    params, x, y = _point(spec, mod)
    want = mod.loss(params, x, y)
    for xi in (x.astype(np.uint8), x.astype(np.int32), x.tolist()):
        assert mod.loss(params, xi, y) == want
    fast = backend == "c"
    for bad, message in [(x.astype(np.float64), "x: expected integers, got dtype float64"),
                         (x + 5, r"x: values must lie in \[0, 5\), got values in \[5, "),
                         (x - 5, r"x: values must lie in \[0, 5\), got values in \[-5, "),
                         (x[:, :2], r"x: expected shape \(N, 3\)")]:
        for fn in ("loss", "forward", "loss_and_grad"):
            before = mod._fastcall_counts()[fn] if fast else None
            with pytest.raises(ValueError, match=message):
                getattr(mod, fn)(params, bad, *(() if fn == "forward" else (y,)))
            if fast:        # the C entry point handed it to the Python path
                assert mod._fastcall_counts()[fn][1] == before[1] + 1
    if fast:                # an exact int64 x in range runs in C
        before = mod._fastcall_counts()["loss"]
        assert mod.loss(params, x, y) == want
        assert mod._fastcall_counts()["loss"] == (before[0] + 1, before[1])


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_one_step_attention(builder, backend):
    """T = 1: one key, so the softmax is 1 and the layer is X·Wv·Wo plus
    biases (its row sum is E itself: the weights E / E fold to a constant,
    which still has the scores' shape)."""
    arch = {"name": "attn_one_step", "input": {"features": 4, "steps": 1},
            "layers": [{"type": "attention", "heads": 2, "causal": True}],
            "loss": "mse"}
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = _point(spec, mod)
    p = params
    want = (x[:, 0] @ p["l0.Wv"] + p["l0.bv"]) @ p["l0.Wo"] + p["l0.bo"]
    assert rel_err(mod.forward(params, x)[:, 0], want) <= 1e-13
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert abs(value - ref_value) <= 1e-13 * max(1.0, abs(ref_value))
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert np.max(np.abs(g - ref_grads[key])) <= 1e-12, key
        assert np.max(np.abs(g - fd[key])) <= 1e-6, key
    h = mod.hessian(params, x, y)
    v = np.random.default_rng(2).standard_normal(mod.N_PARAMS)
    assert np.allclose(h, h.T, atol=1e-12)
    assert np.allclose(h @ v, mod.flatten(mod.hvp(params, x, y, mod.unflatten(v))), atol=1e-11)
