"""bpgen.jax: a generated module inside JAX, over architectures x backends:
jax.grad, jit(grad), jax.hessian, jacrev(jacrev), jax.jvp and jax.vmap
(over parameter sets, and over directions: hmp) equal the module's own
results; jax.test_util.check_grads(order=2, modes=("fwd", "rev")) passes;
third order, derivatives in x and wrong arguments are clear errors.
Skipped as a whole (with the reason) without JAX."""
import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="bpgen.jax needs JAX (pip install jax)")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import bpgen.jax as bj  # noqa: E402

from interop_archs import ARCHS  # noqa: E402

N = 4


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 arrays in JAX for this module's tests (restored after)."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _point(builder, aid, backend, dtype="float64", seed=0):
    from bpgen.check import sample_point
    from bpgen.spec import load_spec
    arch = {**ARCHS[aid], "dtype": dtype}
    mod = builder(arch, backend)
    params, x, y = sample_point(load_spec(arch), mod, N, seed)
    lengths = np.array([3, 1, 2, 3][:N]) if mod.STEPS is not None else None
    return mod, params, np.asarray(x), np.asarray(y), lengths


def _unflat(mod, theta):
    out, off = {}, 0
    for key, shape in mod.PARAM_SHAPES.items():
        size = int(np.prod(shape))
        out[key] = theta[off:off + size].reshape(shape)
        off += size
    return out


def _close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_grad_and_jit_grad(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bj.loss(mod)
    value, grads = mod.loss_and_grad(params, x, y, lengths)
    # mod.loss and loss_and_grad are separate generated functions: their
    # fused loops may round the last bit differently (docs/module-api.md)
    assert float(f(params, x, y, lengths)) == pytest.approx(value, rel=1e-14)
    for g in (jax.grad(f)(params, x, y, lengths), jax.jit(jax.grad(f))(params, x, y, lengths)):
        assert set(g) == set(mod.PARAM_SHAPES)    # (JAX orders a dict's keys)
        for k in grads:
            _close(g[k], grads[k], 0)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_hessians_equal_the_module(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bj.loss(mod)

    def fv(theta):
        return f(_unflat(mod, theta), x, y, lengths)
    theta = jnp.asarray(mod.flatten(params))
    ref = mod.hessian(params, x, y, lengths)
    for name, h in (("hessian", jax.hessian(fv)), ("jit(hessian)", jax.jit(jax.hessian(fv))),
                    ("jacrev(jacrev)", jax.jacrev(jax.jacrev(fv)))):
        np.testing.assert_allclose(np.asarray(h(theta)), ref, rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_check_grads_order_2(builder, aid, backend):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bj.loss(mod)
    check_grads(lambda p: f(p, x, y, lengths), (params,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", ["mlp", "conv", "lstm"])
def test_jvp_and_vmap(builder, aid, backend, monkeypatch):
    mod, params, x, y, lengths = _point(builder, aid, backend)
    f = bj.loss(mod)
    rng = np.random.default_rng(2)
    t = {k: rng.standard_normal(s) for k, s in mod.PARAM_SHAPES.items()}
    _, grads = mod.loss_and_grad(params, x, y, lengths)
    value, dvalue = jax.jvp(lambda p: f(p, x, y, lengths), (params,), (t,))
    assert float(value) == mod.loss(params, x, y, lengths)
    assert float(dvalue) == pytest.approx(sum(float((grads[k] * t[k]).sum()) for k in t),
                                          rel=1e-12)
    # forward over reverse: hvp
    grad_f = jax.grad(lambda p: f(p, x, y, lengths))
    _, hv = jax.jvp(grad_f, (params,), (t,))
    ref = mod.hvp(params, x, y, t, lengths)
    for k in ref:
        _close(hv[k], ref[k])
    # a batch of directions is one hmp call
    calls = []
    hmp = mod.hmp
    monkeypatch.setattr(mod, "hmp", lambda *a, **kw: calls.append(1) or hmp(*a, **kw),
                        raising=False)
    V = rng.standard_normal((mod.N_PARAMS, 3))
    cols = {k: np.stack([mod.unflatten(V[:, j])[k] for j in range(3)]) for k in mod.PARAM_SHAPES}
    hvs = jax.vmap(lambda d: jax.jvp(grad_f, (params,), (d,))[1])(cols)
    got = np.stack([mod.flatten({k: np.asarray(hvs[k][j]) for k in hvs}) for j in range(3)], 1)
    _close(got, hmp(params, x, y, V, lengths))
    assert calls == [1]
    # bpgen.jax.hvp batched over directions, and its transpose
    h = bj.hvp(mod)
    hv2 = jax.vmap(lambda d: h(params, x, y, d, lengths))(cols)
    for k in hv2:
        _close(hv2[k], hvs[k])
    # vmap over parameter sets: values and gradients
    sets = [{k: v + 0.1 * j for k, v in params.items()} for j in range(3)]
    stacked = {k: np.stack([s[k] for s in sets]) for k in params}
    values = jax.vmap(lambda p: f(p, x, y, lengths))(stacked)
    assert np.asarray(values).tolist() == [mod.loss(s, x, y, lengths) for s in sets]
    gs = jax.vmap(jax.grad(lambda p: f(p, x, y, lengths)))(stacked)
    for j, s in enumerate(sets):
        _, ref = mod.loss_and_grad(s, x, y, lengths)
        for k in ref:
            _close(gs[k][j], ref[k], 0)


def test_float32(builder):
    mod, params, x, y, _ = _point(builder, "mlp", "c", dtype="float32")
    f = bj.loss(mod)
    g = jax.grad(f)(params, x, y)
    _, ref = mod.loss_and_grad(params, x, y)
    for k in ref:
        assert g[k].dtype == jnp.float32
        _close(g[k], ref[k], 0)
    with pytest.raises(ValueError, match=r"params\['l0.W'\]: expected float32"):
        f({k: v.astype(np.float64) for k, v in params.items()}, x, y)


def test_refused(builder):
    mod, params, x, y, _ = _point(builder, "mlp", "c")
    f = bj.loss(mod)

    def fv(theta):
        return f(_unflat(mod, theta), x, y)
    theta = jnp.asarray(mod.flatten(params))
    with pytest.raises(NotImplementedError, match="third-order derivatives are not supported"):
        jax.jacfwd(jax.hessian(fv))(theta)
    with pytest.raises(NotImplementedError, match="third-order derivatives are not supported"):
        jax.jacrev(jax.hessian(fv))(theta)
    with pytest.raises(ValueError, match="x: bpgen differentiates the loss with respect to "
                                         "the parameters only"):
        jax.grad(lambda xx: f(params, xx, y))(x)
    first = next(iter(params))
    for bad, message in (({k: v for k, v in params.items() if k != first}, "missing key"),
                         ({**params, "zz": params[first]}, "unknown key 'zz'"),
                         ({**params, first: params[first][:1]}, "expected shape"),
                         ([1, 2], "expected a dict")):
        with pytest.raises(ValueError, match=message):
            f(bad, x, y)


def test_float64_needs_x64(builder):
    mod, params, x, y, _ = _point(builder, "mlp", "c")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            bj.loss(mod)({k: jnp.asarray(v) for k, v in params.items()}, x, y)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_functions_are_the_modules(builder):
    """bpgen.jax.grad and bpgen.jax.hvp return the module's arrays' values."""
    mod, params, x, y, _ = _point(builder, "mlp", "numpy")
    _, grads = mod.loss_and_grad(params, x, y)
    g = bj.grad(mod)(params, x, y)
    v = mod.init_params(5)
    h = bj.hvp(mod)(params, x, y, v)
    ref = mod.hvp(params, x, y, v)
    for k in grads:
        _close(g[k], grads[k], 0)
        _close(h[k], ref[k], 0)
