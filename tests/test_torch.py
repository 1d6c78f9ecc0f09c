"""bpgen.torch: a generated module inside PyTorch, over architectures x
backends (float64; float32 where said): the loss, its gradient and Hessian
through autograd equal the module's own; gradcheck, gradgradcheck and
opcheck pass; torch.autograd.functional.hessian, torch.func.hessian and
jacrev(jacrev) equal mod.hessian; forward mode (torch.func.jvp) and vmap
over directions (hmp) and over parameter sets; training with torch.optim;
clear errors.  Skipped as a whole (with the reason) without PyTorch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="bpgen.torch needs PyTorch "
                                            "(pip install torch==2.13.0)")
import bpgen.torch as bt  # noqa: E402

from interop_archs import ARCHS  # noqa: E402

N = 4


def _point(builder, aid, backend, dtype="float64", seed=0):
    """(module, params as tensors, x, y, lengths or None) at a random point."""
    from bpgen.check import sample_point
    from bpgen.spec import load_spec
    arch = {**ARCHS[aid], "dtype": dtype}
    mod = builder(arch, backend)
    params, x, y = sample_point(load_spec(arch), mod, N, seed)
    lengths = (torch.tensor([3, 1, 2, 3][:N]) if mod.STEPS is not None else None)
    return (mod, {k: torch.from_numpy(v) for k, v in params.items()},
            torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y)), lengths)


def _np(params):
    return {k: v.detach().numpy() for k, v in params.items()}


def _flat_fn(mod, f, x, y, lengths):
    """The loss as a function of the flat parameter vector."""
    def g(theta):
        parts, off = {}, 0
        for key, shape in mod.PARAM_SHAPES.items():
            size = int(np.prod(shape))
            parts[key] = theta[off:off + size].reshape(shape)
            off += size
        return f(parts, x, y, lengths)
    return g


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_loss_grad_hvp_equal_the_module(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bt.loss(mod)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    value = f(leaves, x, y, lengths)
    ref_value, ref_grads = mod.loss_and_grad(_np(params), x.numpy(), y.numpy(), lengths)
    assert value.dtype == torch.float64 and value.shape == ()
    # mod.loss (the forward) and loss_and_grad are separate generated
    # functions: their fused loops may round the last bit differently
    assert value.item() == pytest.approx(ref_value, rel=1e-14)
    grads = torch.autograd.grad(value, list(leaves.values()), create_graph=True)
    for key, g in zip(leaves, grads):
        np.testing.assert_array_equal(g.detach().numpy(), ref_grads[key])
    rng = np.random.default_rng(1)
    v = {k: rng.standard_normal(s) for k, s in mod.PARAM_SHAPES.items()}
    dot = sum((g * torch.from_numpy(v[k])).sum() for k, g in zip(params, grads))
    hv = torch.autograd.grad(dot, list(leaves.values()))
    ref_hv = mod.hvp(_np(params), x.numpy(), y.numpy(), v, lengths)
    for key, h in zip(leaves, hv):
        np.testing.assert_allclose(h.numpy(), ref_hv[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aid", list(ARCHS))
def test_gradcheck_and_gradgradcheck(builder, aid):
    mod, params, x, y, lengths = _point(builder, aid, "c")
    f = bt.loss(mod)
    keys = list(params)

    def fn(*ts):
        return f(dict(zip(keys, ts)), x, y, lengths)
    ts = tuple(params[k].clone().requires_grad_() for k in keys)
    assert torch.autograd.gradcheck(fn, ts)
    assert torch.autograd.gradgradcheck(fn, ts)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_opcheck(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    key = bt._key(mod)
    mats = [p.clone().requires_grad_() for p in params.values()]
    v = [torch.randn(p.shape, dtype=p.dtype, requires_grad=True) for p in mats]
    for op, args in ((torch.ops.bpgen.loss.default, (key, mats, x, y, lengths)),
                     (torch.ops.bpgen.grad.default, (key, mats, x, y, lengths)),
                     (torch.ops.bpgen.hvp.default,
                      (key, [m.detach() for m in mats], x, y, lengths, v)),
                     (torch.ops.bpgen.forward.default,
                      (key, [m.detach() for m in mats], x, lengths))):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_hessians_equal_the_module(builder, aid, backend):
    """torch.autograd.functional.hessian (reverse over reverse),
    torch.func.hessian (forward over reverse) and jacrev(jacrev)."""
    mod, params, x, y, lengths = _point(builder, aid, backend)
    theta = torch.from_numpy(mod.flatten(_np(params)))
    g = _flat_fn(mod, bt.loss(mod), x, y, lengths)
    ref = mod.hessian(_np(params), x.numpy(), y.numpy(), lengths)
    for name, h in (("autograd.functional.hessian", torch.autograd.functional.hessian(g, theta)),
                    ("func.hessian", torch.func.hessian(g)(theta)),
                    ("jacrev(jacrev)", torch.func.jacrev(torch.func.jacrev(g))(theta))):
        np.testing.assert_allclose(h.numpy(), ref, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("aid", ["mlp", "lstm"])
def test_func_hessian_over_the_dict(builder, aid):
    mod, params, x, y, lengths = _point(builder, aid, "c")
    h = torch.func.hessian(bt.loss(mod))(params, x, y, lengths)
    ref = mod.hessian(_np(params), x.numpy(), y.numpy(), lengths)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in mod.PARAM_SHAPES.values()])
    keys = list(mod.PARAM_SHAPES)
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            block = ref[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]]
            np.testing.assert_allclose(h[a][b].reshape(block.shape).numpy(), block,
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", ["mlp", "conv", "transformer"])
def test_forward_mode_and_vmap(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bt.loss(mod)
    rng = np.random.default_rng(2)
    t = {k: torch.from_numpy(rng.standard_normal(s)) for k, s in mod.PARAM_SHAPES.items()}
    _, grads = mod.loss_and_grad(_np(params), x.numpy(), y.numpy())
    value, dvalue = torch.func.jvp(lambda p: f(p, x, y), (params,), (t,))
    assert value.item() == mod.loss(_np(params), x.numpy(), y.numpy())
    expected = sum(float((grads[k] * t[k].numpy()).sum()) for k in grads)
    assert dvalue.item() == pytest.approx(expected, rel=1e-12)
    # forward over reverse: the gradient's jvp is hvp
    grad_f = torch.func.grad(lambda p: f(p, x, y))
    _, hv = torch.func.jvp(grad_f, (params,), (t,))
    ref = mod.hvp(_np(params), x.numpy(), y.numpy(), _np(t))
    for k in ref:
        np.testing.assert_allclose(hv[k].numpy(), ref[k], rtol=1e-12, atol=1e-12)
    # vmap of hvp over directions is hmp
    V = rng.standard_normal((mod.N_PARAMS, 3))
    cols = {k: torch.from_numpy(np.stack([mod.unflatten(V[:, j])[k] for j in range(3)]))
            for k in mod.PARAM_SHAPES}
    hvs = torch.func.vmap(lambda d: torch.func.jvp(grad_f, (params,), (d,))[1])(cols)
    got = np.stack([mod.flatten({k: hvs[k][j].numpy() for k in hvs}) for j in range(3)], 1)
    np.testing.assert_allclose(got, mod.hmp(_np(params), x.numpy(), y.numpy(), V),
                               rtol=1e-12, atol=1e-12)
    # vmap over parameter sets
    sets = [{k: v + 0.1 * j for k, v in params.items()} for j in range(3)]
    stacked = {k: torch.stack([s[k] for s in sets]) for k in params}
    values = torch.func.vmap(lambda p: f(p, x, y))(stacked)
    assert values.tolist() == [mod.loss(_np(s), x.numpy(), y.numpy()) for s in sets]


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", ["mlp", "lstm"])
def test_module_and_optimizers(builder, aid, backend):
    mod, _, x, y, lengths = _point(builder, aid, backend)
    net = bt.module(mod, seed=3)
    assert list(net.state_dict()) == list(mod.PARAM_SHAPES)
    init = mod.init_params(3)
    for key, p in net.params().items():
        assert isinstance(p, torch.nn.Parameter) and np.array_equal(p.detach().numpy(), init[key])
    out = net(x, lengths)
    np.testing.assert_array_equal(out.detach().numpy(), mod.forward(init, x.numpy(), lengths))
    # one SGD step is theta - lr * the module's gradient
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    sgd.zero_grad()
    net.loss(x, y, lengths).backward()
    sgd.step()
    _, grads = mod.loss_and_grad(init, x.numpy(), y.numpy(), lengths)
    for key, p in net.params().items():
        np.testing.assert_allclose(p.detach().numpy(), init[key] - 0.1 * grads[key],
                                   rtol=1e-14, atol=1e-15)
    # Adam steps lower the loss
    adam = torch.optim.Adam(net.parameters(), lr=0.01)
    first = net.loss(x, y, lengths).item()
    for _ in range(20):
        adam.zero_grad()
        loss = net.loss(x, y, lengths)
        loss.backward()
        adam.step()
    assert net.loss(x, y, lengths).item() < first
    # the trained parameters through the module's own file
    trained = {k: p.detach().numpy() for k, p in net.params().items()}
    assert mod.loss(trained, x.numpy(), y.numpy(), lengths) == net.loss(x, y, lengths).item()


def test_float32(builder):
    mod, params, x, y, lengths = _point(builder, "mlp", "c", dtype="float32")
    f = bt.loss(mod)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    value = f(leaves, x, y)
    assert value.dtype == torch.float32
    grads = torch.autograd.grad(value, list(leaves.values()))
    _, ref = mod.loss_and_grad(_np(params), x.numpy(), y.numpy())
    for key, g in zip(leaves, grads):
        assert g.dtype == torch.float32
        np.testing.assert_array_equal(g.numpy(), ref[key])
    with pytest.raises(ValueError, match=r"params\['l0.W'\]: expected torch.float32"):
        f({k: v.double() for k, v in params.items()}, x, y)
    with pytest.raises(ValueError, match="x: expected torch.float32"):
        f(params, x.double(), y)


def test_no_copies(builder):
    """The module receives numpy() views of the tensors, and the operator's
    results are its arrays, not copies (the loss's backward then scales
    them by the incoming gradient: one product)."""
    mod, params, x, y, _ = _point(builder, "mlp", "c")
    seen = {}

    class Spy:
        def __getattr__(self, name):
            return getattr(mod, name)

        def loss_and_grad(self, p, xa, ya, lengths=None):
            seen["shared"] = (all(np.shares_memory(p[k], params[k].numpy()) for k in p)
                              and np.shares_memory(xa, x.numpy()))
            value, grads = mod.loss_and_grad(p, xa, ya, lengths)
            seen["grads"] = grads
            return value, grads
    spy = Spy()
    grads = torch.ops.bpgen.grad(bt._key(spy), list(params.values()), x, y, None)
    assert seen["shared"]
    assert all(np.shares_memory(g.numpy(), seen["grads"][k]) for k, g in zip(params, grads))


# a bad call -> (the exception, the message)
def _bad_calls(mod, params, x, y):
    first = next(iter(params))
    return {
        "meta device": (lambda: bt.loss(mod)({**params, first: params[first].to("meta")}, x, y),
                        ValueError, r"bpgen runs on the CPU, got a tensor on meta"),
        "x on meta": (lambda: bt.loss(mod)(params, x.to("meta"), y), ValueError,
                      "x: bpgen runs on the CPU"),
        "float32 params": (lambda: bt.loss(mod)({k: v.float() for k, v in params.items()}, x, y),
                           ValueError, r"expected torch.float64 \(the module's dtype\)"),
        "shape": (lambda: bt.loss(mod)({**params, first: params[first][:1]}, x, y), ValueError,
                  rf"params\['{first}'\]: expected shape"),
        "missing key": (lambda: bt.loss(mod)({k: v for k, v in params.items() if k != first},
                                             x, y), ValueError, f"missing key '{first}'"),
        "unknown key": (lambda: bt.loss(mod)({**params, "zz": params[first]}, x, y), ValueError,
                        "unknown key 'zz'"),
        "not a dict": (lambda: bt.loss(mod)(list(params.values()), x, y), ValueError,
                       "expected a dict of tensors"),
        "x requires grad": (lambda: bt.loss(mod)(params, x.clone().requires_grad_(), y),
                            ValueError, "x: bpgen differentiates the loss with respect to the "
                                        "parameters only"),
        "bad y": (lambda: bt.loss(mod)(params, x, y[:2]), ValueError, "y: expected shape"),
        "not a module": (lambda: bt.loss(object()), ValueError, "expected a generated bpgen"),
    }


@pytest.mark.parametrize("case", list(_bad_calls(None, {"a": torch.zeros(1)}, None, None)))
def test_bad_calls(builder, case):
    mod, params, x, y, _ = _point(builder, "mlp", "c")
    call, exc, message = _bad_calls(mod, params, x, y)[case]
    with pytest.raises(exc, match=message):
        call()


def test_refused_derivatives(builder):
    """forward() has no backward; third order is refused."""
    mod, params, x, y, _ = _point(builder, "mlp", "c")
    net = bt.module(mod)
    with pytest.raises(RuntimeError, match=r"forward\(x\) has no backward pass"):
        net(x).sum().backward()
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(bt.loss(mod)(leaves, x, y), list(leaves.values()),
                                create_graph=True)
    hv = torch.autograd.grad(grads[0].sum(), list(leaves.values()), create_graph=True)
    with pytest.raises(RuntimeError, match="third-order derivatives are not supported"):
        torch.autograd.grad(hv[0].sum(), list(leaves.values()))
    f = bt.loss(mod)
    for third in (torch.func.jacfwd(torch.func.hessian(f)),
                  torch.func.jacrev(torch.func.hessian(f)),
                  torch.func.jacrev(torch.func.jacrev(torch.func.jacrev(f)))):
        with pytest.raises(RuntimeError, match="third-order derivatives are not supported"):
            third(params, x, y)


def test_layer_named_like_a_module_attribute(builder):
    arch = {**ARCHS["mlp"], "name": "tt_clash",
            "layers": [dict(ARCHS["mlp"]["layers"][0], name="forward")] + ARCHS["mlp"]["layers"][1:]}
    mod = builder(arch, "numpy")
    with pytest.raises(ValueError, match="layer name 'forward' .* is an attribute of torch.nn.Module"):
        bt.module(mod)
    params = {k: torch.from_numpy(v) for k, v in mod.init_params().items()}
    x, y = torch.zeros((2, 4), dtype=torch.float64), torch.zeros((2, 3), dtype=torch.float64)
    assert bt.loss(mod)(params, x, y).item() == mod.loss(mod.init_params(), x.numpy(), y.numpy())


def test_state_dict_and_parameter_files(builder, tmp_path):
    """A trained nn.Module's state_dict goes through the module's own file."""
    mod, _, x, y, _ = _point(builder, "mlp", "c")
    net = bt.module(mod, seed=1)
    mod.save_params(tmp_path / "p.npz", {k: v.detach().numpy() for k, v in net.state_dict().items()})
    other = bt.module(mod, seed=2)
    other.load_state_dict({k: torch.from_numpy(v)
                           for k, v in mod.load_params(tmp_path / "p.npz").items()})
    assert net.loss(x, y).item() == other.loss(x, y).item()
