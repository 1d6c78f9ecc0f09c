"""Bad and unusual calls of the generated modules, both backends.

Every wrong shape, dtype, key or value must be a ValueError whose message
names the offending argument -- never a crash and never a silently wrong
answer; inputs are never modified; any memory layout and any dtype that casts
safely is accepted and gives the same answer as a contiguous array of the
module's dtype; returned arrays are fresh, C-contiguous and of the module's
dtype (contract section 2).
"""
import copy
import math
import re

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, rel_err, sample_point
from bpgen.spec import LOSSES, load_spec

from conftest import mlp
from test_generated import sampled_arch

BACKENDS = ["numpy", "c"]
DTYPES = ["float64", "float32"]
SCE, MSE, BCE = "softmax_cross_entropy", "mse", "sigmoid_binary_cross_entropy"
K = 3          # output units
F = 4          # input features
N = 5          # default batch


def _arch(loss, dtype):
    # a 4-5-4-3 network whose C module test_generated.py builds (no compile of its own)
    arch = sampled_arch(loss, dtype)
    assert arch["input"]["features"] == F and arch["layers"][-1]["units"] == K
    return arch


@pytest.fixture
def make(builder):
    """make(backend, loss, dtype) -> (spec, module, params, x, y)."""
    def make(backend, loss=MSE, dtype="float64", batch=N, seed=0):
        arch = _arch(loss, dtype)
        spec = load_spec(arch)
        mod = builder(arch, backend)
        params, x, y = sample_point(spec, mod, batch=batch, seed=seed)
        return spec, mod, params, x, y
    return make


def _names(what):
    """pytest.raises(ValueError) whose message contains ``what`` verbatim."""
    return pytest.raises(ValueError, match=re.escape(what))


def _raises_naming(call, what, start, label):
    """``call()`` raises ValueError whose message contains ``what`` and starts
    with ``start`` (the argument it names)."""
    with _names(what) as info:
        call()
    assert str(info.value).startswith(start), (label, str(info.value))


def _all_calls(mod, params, x, y):
    """Each public function taking (params, x[, y]) as a zero-argument call."""
    return [lambda: mod.forward(params, x), lambda: mod.loss(params, x, y),
            lambda: mod.loss_and_grad(params, x, y)]


def _results(mod, params, x, y):
    out = mod.forward(params, x)
    value = mod.loss(params, x, y)
    value2, grads = mod.loss_and_grad(params, x, y)
    return out, value, value2, grads


def _assert_same_results(a, b, tol):
    out_a, va, va2, ga = a
    out_b, vb, vb2, gb = b
    assert rel_err(out_a, out_b) <= tol
    assert abs(va - vb) <= tol * max(1.0, abs(vb))
    assert abs(va2 - vb2) <= tol * max(1.0, abs(vb2))
    assert list(ga) == list(gb)
    for key in ga:
        assert rel_err(ga[key], gb[key]) <= tol, key


def _tol(dtype):
    # same values in another layout: only BLAS blocking may differ
    return 1e-13 if dtype == "float64" else 1e-6


# ==========================================================================
# x

def _bad_xs(x):
    f = x.shape[1]
    return {
        "1-D (one sample without a batch axis)": x[0],
        "0-D": x[0, 0],
        "3-D": x[:, :, None],
        "too few features": x[:, :f - 1],
        "too many features": np.concatenate([x, x[:, :1]], axis=1),
        "transposed": np.ascontiguousarray(x.T),
        "string": x.astype(str),
        "complex": x.astype(np.complex128),
        "object": x.astype(object),
        "None": None,
        "ragged list": [[1.0, 2.0], [1.0]],
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_bad_x(make, backend, loss):
    _, mod, params, x, y = make(backend, loss)
    for label, bad in _bad_xs(x).items():
        for call in _all_calls(mod, params, bad, y):
            _raises_naming(call, "x", "x", label)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_empty_batch(make, backend, loss):
    _, mod, params, x, y = make(backend, loss)
    for call in _all_calls(mod, params, x[:0], y[:0]):
        with _names("x: the batch is empty"):
            call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_x_refused_by_float32_module(make, backend):
    _, mod, params, x, y = make(backend, MSE, "float32")
    for x64 in (x.astype(np.float64), x.astype(np.int64), x.astype(np.int32),
                x.astype(np.longdouble)):
        for call in _all_calls(mod, params, x64, y):
            with _names("x: dtype"):
                call()
            with pytest.raises(ValueError, match="cast safely"):
                call()


# ==========================================================================
# params

def _bad_param_sets(params):
    """label -> (bad params, text the message must contain)."""
    W = params["l0.W"]
    cases = {}
    p = dict(params)
    del p["l0.W"]
    cases["missing key"] = (p, "'l0.W'")
    p = dict(params)
    del p["l2.b"]
    cases["missing bias"] = (p, "'l2.b'")
    cases["unknown extra key"] = (dict(params, **{"l3.W": W}), "'l3.W'")
    cases["misspelled key"] = ({("l0.w" if k == "l0.W" else k): v
                                for k, v in params.items()}, "'l0.w'")
    cases["non-string key"] = ({**params, 0: W}, "unknown key 0")
    cases["transposed W"] = (dict(params, **{"l0.W": np.ascontiguousarray(W.T)}),
                             "params['l0.W']")
    cases["W missing a row"] = (dict(params, **{"l0.W": W[:-1]}), "params['l0.W']")
    cases["W flattened"] = (dict(params, **{"l0.W": W.ravel()}), "params['l0.W']")
    cases["bias as a row"] = (dict(params, **{"l1.b": params["l1.b"][None, :]}),
                              "params['l1.b']")
    cases["bias scalar"] = (dict(params, **{"l1.b": params["l1.b"][0]}),
                            "params['l1.b']")
    cases["string dtype"] = (dict(params, **{"l0.W": W.astype(str)}), "params['l0.W']")
    cases["complex dtype"] = (dict(params, **{"l0.W": W.astype(complex)}),
                              "params['l0.W']")
    cases["object dtype"] = (dict(params, **{"l0.W": W.astype(object)}),
                             "params['l0.W']")
    cases["None value"] = (dict(params, **{"l2.W": None}), "params['l2.W']")
    return cases


def _not_dicts(params):
    return {"list of arrays": list(params.values()),
            "tuple of items": tuple(params.items()),
            "flat vector": np.concatenate([v.ravel() for v in params.values()]),
            "None": None, "string": "l0.W"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_bad_params(make, backend, loss):
    _, mod, params, x, y = make(backend, loss)
    for label, (bad, text) in _bad_param_sets(params).items():
        for call in _all_calls(mod, bad, x, y) + [lambda: mod.flatten(bad)]:
            _raises_naming(call, text, "params", label)
    for label, bad in _not_dicts(params).items():
        for call in _all_calls(mod, bad, x, y) + [lambda: mod.flatten(bad)]:
            with _names("params: expected a dict"):
                call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_params_refused_by_float32_module(make, backend):
    _, mod, params, x, y = make(backend, MSE, "float32")
    for key in ("l0.W", "l2.b"):
        bad = dict(params, **{key: params[key].astype(np.float64)})
        for call in _all_calls(mod, bad, x, y) + [lambda: mod.flatten(bad)]:
            with _names(f"params[{key!r}]: dtype float64 cannot be cast safely"):
                call()


# ==========================================================================
# y

@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_labels(make, backend):
    _, mod, params, x, y = make(backend, SCE)
    assert y.dtype.kind == "i" and y.shape == (N,)
    bad = {
        "float labels": y.astype(np.float64),
        "float labels (float32)": y.astype(np.float32),
        "bool labels": (y > 0),
        "string labels": y.astype(str),
        "object labels": y.astype(object),
        "complex labels": y.astype(complex),
        "None": None,
        "negative label": np.where(np.arange(N) == 2, -1, y),
        "label == K": np.where(np.arange(N) == 1, K, y),
        "label > K": np.where(np.arange(N) == 0, 1000, y),
        "huge unsigned label": y.astype(np.uint64) + np.uint64(2**63),
        "column of labels": y[:, None],
        "one-hot (integer)": np.eye(K, dtype=np.int64)[y],
        "one-hot (float)": np.eye(K)[y],
        "too few labels": y[:-1],
        "too many labels": np.concatenate([y, y[:1]]),
        "scalar label": y[0],
    }
    for label, yb in bad.items():
        for call in _all_calls(mod, params, x, yb)[1:]:
            _raises_naming(call, "y", "y", label)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", [MSE, BCE])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_targets(make, backend, loss, dtype):
    _, mod, params, x, y = make(backend, loss, dtype)
    bad = {
        "1-D": y[:, 0],
        "transposed": np.ascontiguousarray(y.T),
        "too few units": y[:, :-1],
        "too many units": np.concatenate([y, y[:, :1]], axis=1),
        "too few rows": y[:-1],
        "too many rows": np.concatenate([y, y[:1]]),
        "3-D": y[:, :, None],
        "string": y.astype(str),
        "complex": y.astype(complex),
        "object": y.astype(object),
        "None": None,
    }
    if dtype == "float32":
        bad["float64 into float32"] = y.astype(np.float64)
    if loss == BCE:
        for label, value in (("above 1", 1.5), ("below 0", -0.25), ("NaN", np.nan),
                             ("inf", np.inf), ("-inf", -np.inf),
                             ("just above 1", np.nextafter(np.float32(1), 2))):
            yb = y.copy()
            yb[1, 2] = value
            bad[label] = yb
    for label, yb in bad.items():
        for call in _all_calls(mod, params, x, yb)[1:]:
            _raises_naming(call, "y", "y", label)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_accepts_boundary_and_bool_targets(make, backend):
    spec, mod, params, x, y = make(backend, BCE)
    yb = y.copy()
    yb[0] = 0.0
    yb[1] = 1.0
    value, grads = mod.loss_and_grad(params, x, yb)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, yb)
    assert value == pytest.approx(ref_value, rel=1e-12)
    hard = y > 0.5
    _assert_same_results(_results(mod, params, x, hard),
                         _results(mod, params, x, hard.astype(np.float64)), 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ltype", [np.int8, np.uint8, np.int32, np.uint64, np.int64])
def test_label_integer_types(make, backend, ltype):
    _, mod, params, x, y = make(backend, SCE)
    _assert_same_results(_results(mod, params, x, y.astype(ltype)),
                         _results(mod, params, x, y), 0.0)


# ==========================================================================
# inputs are never modified; read-only inputs work

def _snapshot(obj):
    return copy.deepcopy(obj)


def _assert_unchanged(before, after):
    if isinstance(before, dict):
        assert list(before) == list(after)
        for key in before:
            _assert_unchanged(before[key], after[key])
    else:
        assert type(before) is type(after)
        np.testing.assert_array_equal(after, before)
        if isinstance(before, np.ndarray):
            assert after.dtype == before.dtype and after.shape == before.shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_not_modified(make, backend, loss, dtype):
    _, mod, params, x, y = make(backend, loss, dtype)
    snaps = [_snapshot(a) for a in (params, x, y)]
    mod.forward(params, x)
    mod.loss(params, x, y)
    _, grads = mod.loss_and_grad(params, x, y)
    vec = mod.flatten(params)
    vec_before = vec.copy()
    back = mod.unflatten(vec)
    for snap, now in zip(snaps, (params, x, y)):
        _assert_unchanged(snap, now)
    np.testing.assert_array_equal(vec, vec_before)
    # results are fresh: writing to them changes neither the inputs nor later results
    first = _results(mod, params, x, y)
    for arr in [first[0], vec, *back.values(), *grads.values(), *first[3].values()]:
        arr[...] = 12345
    for snap, now in zip(snaps, (params, x, y)):
        _assert_unchanged(snap, now)
    _assert_same_results(_results(mod, params, x, y), _results(mod, params, x, y), 0.0)
    vec2 = mod.flatten(params)
    back2 = mod.unflatten(vec2)
    back2["l0.W"][...] = -1
    np.testing.assert_array_equal(vec2, mod.flatten(params))


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs(make, backend, loss, dtype):
    _, mod, params, x, y = make(backend, loss, dtype)
    ro_params = {k: _read_only(v) for k, v in params.items()}
    ro_x, ro_y = _read_only(x), _read_only(y)
    _assert_same_results(_results(mod, ro_params, ro_x, ro_y),
                         _results(mod, params, x, y), 0.0)
    vec = _read_only(mod.flatten(ro_params))
    back = mod.unflatten(vec)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])
        assert back[key].flags.writeable


# ==========================================================================
# memory layouts and safe casts

def _strided(a):
    """The same values as a non-contiguous view (every other element of a
    twice-as-large buffer along every axis, then reversed twice)."""
    a = np.asarray(a)
    big = np.full(tuple(2 * s for s in a.shape), np.nan if a.dtype.kind == "f" else 0,
                  dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    if a.ndim:
        assert not view.flags.c_contiguous or a.size <= 1
    return view


def _reversed_view(a):
    """A negative-stride view holding the same values."""
    a = np.asarray(a)
    flipped = np.ascontiguousarray(np.flip(a))
    return np.flip(flipped)


def _big_endian(a):
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder(">"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts(make, backend, loss, dtype):
    _, mod, params, x, y = make(backend, loss, dtype)
    base = _results(mod, params, x, y)
    tol = _tol(dtype)
    fortran = ({k: np.asfortranarray(v) for k, v in params.items()},
               np.asfortranarray(x), np.asfortranarray(y))
    assert not fortran[0]["l0.W"].flags.c_contiguous and not fortran[1].flags.c_contiguous
    layouts = {
        "fortran": fortran,
        "strided": ({k: _strided(v) for k, v in params.items()}, _strided(x), _strided(y)),
        "negative strides": ({k: _reversed_view(v) for k, v in params.items()},
                             _reversed_view(x), _reversed_view(y)),
        "big-endian": ({k: _big_endian(v) for k, v in params.items()},
                       _big_endian(x), _big_endian(y)),
        "transposed view": ({k: (np.ascontiguousarray(v.T).T if v.ndim == 2 else v)
                             for k, v in params.items()},
                            np.ascontiguousarray(x.T).T, y),
    }
    for label, (p, xx, yy) in layouts.items():
        for k in params:
            np.testing.assert_array_equal(p[k], params[k])
        np.testing.assert_array_equal(xx, x)
        try:
            _assert_same_results(_results(mod, p, xx, yy), base, tol)
            np.testing.assert_array_equal(mod.flatten(p), mod.flatten(params))
        except AssertionError as exc:
            raise AssertionError(f"layout {label}: {exc}") from None
    vec = mod.flatten(params)
    for view in (_strided(vec), _reversed_view(vec), _big_endian(vec)):
        back = mod.unflatten(view)
        for k in params:
            np.testing.assert_array_equal(back[k], params[k])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_safe_casts_float64_module(make, backend, loss):
    _, mod, params, x, y = make(backend, loss, "float64")
    xi = np.rint(3 * x).astype(np.int64)
    base = _results(mod, params, xi.astype(np.float64), y)
    for xx in (xi, xi.astype(np.int32), xi.astype(np.int8), xi.astype(np.float32),
               xi.astype(np.float16)):
        _assert_same_results(_results(mod, params, xx, y), base, 0.0)
    # float32 parameters and targets are widened exactly
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    p32_as64 = {k: v.astype(np.float64) for k, v in p32.items()}
    y32 = y.astype(np.float32) if loss != SCE else y
    y32_as64 = y32.astype(np.float64) if loss != SCE else y
    _assert_same_results(_results(mod, p32, x, y32), _results(mod, p32_as64, x, y32_as64), 0.0)
    # integer parameters (e.g. zeros) work too
    pz = {k: np.zeros(v.shape, dtype=np.int64) for k, v in params.items()}
    pzf = {k: np.zeros(v.shape) for k, v in params.items()}
    _assert_same_results(_results(mod, pz, x, y), _results(mod, pzf, x, y), 0.0)
    vi = np.arange(mod.N_PARAMS)
    back = mod.unflatten(vi)
    for k, v in back.items():
        assert v.dtype == np.float64
    np.testing.assert_array_equal(mod.flatten(back), vi.astype(np.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_safe_casts_float32_module(make, backend):
    _, mod, params, x, y = make(backend, MSE, "float32")
    xi = np.rint(3 * x).astype(np.int16)
    base = _results(mod, params, xi.astype(np.float32), y)
    for xx in (xi, xi.astype(np.int8), xi.astype(np.float16), xi > 0):
        _assert_same_results(_results(mod, params, xx, y),
                             _results(mod, params, xx.astype(np.float32), y), 0.0)
    _assert_same_results(_results(mod, params, xi, y), base, 0.0)
    with _names("vector: dtype float64"):
        mod.unflatten(mod.flatten(params).astype(np.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_lists(make, backend, loss):
    _, mod, params, x, y = make(backend, loss, "float64")
    lp = {k: v.tolist() for k, v in params.items()}
    _assert_same_results(_results(mod, lp, x.tolist(), y.tolist()),
                         _results(mod, params, x, y), 0.0)
    vec = mod.flatten(lp)
    np.testing.assert_array_equal(vec, mod.flatten(params))
    back = mod.unflatten(vec.tolist())
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])


# ==========================================================================
# what comes back

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_return_types(make, backend, loss, dtype):
    _, mod, params, x, y = make(backend, loss, dtype)
    dt = np.dtype(dtype)
    out = mod.forward(params, x)
    assert type(out) is np.ndarray and out.dtype == dt and out.flags.c_contiguous
    assert out.shape == (N, K) and out.flags.writeable
    value = mod.loss(params, x, y)
    assert type(value) is float and math.isfinite(value)
    value2, grads = mod.loss_and_grad(params, x, y)
    assert type(value2) is float
    assert type(grads) is dict
    assert list(grads) == list(mod.PARAM_SHAPES)
    for key, g in grads.items():
        assert type(g) is np.ndarray and g.dtype == dt and g.flags.c_contiguous, key
        assert g.shape == mod.PARAM_SHAPES[key] and g.flags.writeable, key
    # the dict is keyed like PARAM_SHAPES even when params come in another order
    shuffled = {k: params[k] for k in reversed(list(params))}
    _, grads2 = mod.loss_and_grad(shuffled, x, y)
    assert list(grads2) == list(mod.PARAM_SHAPES)
    for key in grads:
        np.testing.assert_array_equal(grads2[key], grads[key])
    vec = mod.flatten(params)
    assert type(vec) is np.ndarray and vec.dtype == dt and vec.flags.c_contiguous
    assert vec.shape == (mod.N_PARAMS,)
    back = mod.unflatten(vec)
    assert type(back) is dict and list(back) == list(mod.PARAM_SHAPES)
    for key, v in back.items():
        assert v.dtype == dt and v.flags.c_contiguous and v.shape == mod.PARAM_SHAPES[key]


# ==========================================================================
# flatten / unflatten, N_PARAMS

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_unflatten(make, backend, dtype):
    spec, mod, params, x, y = make(backend, MSE, dtype)
    assert list(mod.PARAM_SHAPES) == ["l0.W", "l0.b", "l1.W", "l1.b", "l2.W", "l2.b"]
    assert dict(mod.PARAM_SHAPES) == {"l0.W": (F, 5), "l0.b": (5,), "l1.W": (5, 4),
                                      "l1.b": (4,), "l2.W": (4, K), "l2.b": (K,)}
    assert mod.N_PARAMS == F * 5 + 5 + 5 * 4 + 4 + 4 * K + K
    assert mod.N_PARAMS == sum(math.prod(s) for s in mod.PARAM_SHAPES.values())
    assert type(mod.N_PARAMS) is int
    # order: keys in PARAM_SHAPES order (whatever the dict's order), C order
    shuffled = {k: params[k] for k in reversed(list(params))}
    vec = mod.flatten(shuffled)
    expect = np.concatenate([params[k].ravel(order="C") for k in mod.PARAM_SHAPES])
    np.testing.assert_array_equal(vec, expect)
    np.testing.assert_array_equal(vec, ref.flatten_params(spec, params).astype(dtype))
    # an explicit element: l1.W[i, j] sits at offset(l1.W) + i * 4 + j
    off = F * 5 + 5
    assert vec[off + 2 * 4 + 3] == params["l1.W"][2, 3]
    # roundtrips
    back = mod.unflatten(vec)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
        assert back[k].dtype == np.dtype(dtype)
    v = np.random.default_rng(7).standard_normal(mod.N_PARAMS).astype(dtype)
    np.testing.assert_array_equal(mod.flatten(mod.unflatten(v)), v)
    # gradients flatten in the same order as parameters
    _, grads = mod.loss_and_grad(params, x, y)
    gvec = mod.flatten(grads)
    np.testing.assert_array_equal(mod.unflatten(gvec)["l2.W"], grads["l2.W"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_unflatten_bad(make, backend):
    _, mod, params, _, _ = make(backend, MSE, "float64")
    vec = mod.flatten(params)
    bad = {"one short": vec[:-1], "one long": np.concatenate([vec, vec[:1]]),
           "empty": vec[:0], "2-D row": vec[None, :], "2-D column": vec[:, None],
           "scalar": vec[0], "string": vec.astype(str), "complex": vec.astype(complex),
           "object": vec.astype(object), "None": None, "dict": params}
    for label, b in bad.items():
        with _names("vector"):
            mod.unflatten(b)
        try:
            mod.unflatten(b)
        except ValueError as exc:
            assert str(exc).startswith("vector"), (label, str(exc))
    with _names(f"vector: expected shape ({mod.N_PARAMS},), got ({mod.N_PARAMS - 1},)"):
        mod.unflatten(vec[:-1])


# ==========================================================================
# init_params

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_init_params(make, backend, dtype):
    spec, mod, _, x, y = make(backend, MSE, dtype)
    dt = np.dtype(dtype)
    p0, p0b, p1 = mod.init_params(0), mod.init_params(seed=0), mod.init_params(1)
    pdefault = mod.init_params()
    assert type(p0) is dict and list(p0) == list(mod.PARAM_SHAPES)
    for key, shape in mod.PARAM_SHAPES.items():
        a = p0[key]
        assert type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous
        assert a.shape == shape and a.flags.writeable
        np.testing.assert_array_equal(a, p0b[key])          # deterministic
        np.testing.assert_array_equal(a, pdefault[key])     # seed defaults to 0
        assert a is not p0b[key]
        if key.endswith(".b"):
            assert not a.any() and not p1[key].any()         # zero biases
        else:
            fan_in, fan_out = shape
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            assert np.abs(a).max() <= limit * (1 + 1e-6)     # Glorot bound
            assert np.abs(a).max() > 0.5 * limit             # ... and it is used
            assert len(np.unique(a)) == a.size
            assert not np.array_equal(a, p1[key])             # seeds differ
            assert abs(a.mean()) < limit                      # roughly centred
        np.testing.assert_array_equal(a, ref.init_params(spec, 0)[key])
    # fresh arrays every call
    p0["l0.W"][...] = 0
    assert mod.init_params(0)["l0.W"].any()
    # usable as they are
    value, grads = mod.loss_and_grad(mod.init_params(3), x, y)
    assert math.isfinite(value)


def test_glorot_statistics(builder):
    """A wide layer's weights fill U(-l, l): the extremes approach l."""
    arch = mlp("tanh", MSE, hidden=(), out=40, features=60, name="glorot")
    mod = builder(arch, "numpy")
    W = mod.init_params(5)["l0.W"]
    limit = math.sqrt(6.0 / 100)
    assert W.shape == (60, 40)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.99 * limit
    assert abs(W.mean()) < 0.05 * limit
    assert W.std() == pytest.approx(limit / math.sqrt(3), rel=0.03)


# ==========================================================================
# batch sizes

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 257])
def test_batch_sizes_match_reference(make, backend, loss, dtype, batch):
    spec, mod, params, x, y = make(backend, loss, dtype, batch=batch, seed=batch)
    tol = TOLERANCES[dtype][0]
    out = mod.forward(params, x)
    assert out.shape == (batch, K)
    assert rel_err(out, ref.forward(spec, params, x)) <= tol
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert abs(value - ref_value) <= tol * max(1.0, abs(ref_value))
    assert abs(mod.loss(params, x, y) - ref_value) <= tol * max(1.0, abs(ref_value))
    for key in grads:
        assert rel_err(grads[key], ref_grads[key]) <= tol, key


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_batch_is_a_mean(make, backend, loss):
    """Repeating the batch leaves loss and gradient unchanged; the rows of
    forward() do not depend on the other rows."""
    _, mod, params, x, y = make(backend, loss, "float64", batch=7, seed=2)
    x2, y2 = np.concatenate([x, x]), np.concatenate([y, y])
    v1, g1 = mod.loss_and_grad(params, x, y)
    v2, g2 = mod.loss_and_grad(params, x2, y2)
    assert v2 == pytest.approx(v1, rel=1e-13)
    for key in g1:
        assert rel_err(g2[key], g1[key]) <= 1e-13, key
    out = mod.forward(params, x)
    for i in (0, 3, 6):
        assert rel_err(mod.forward(params, x[i:i + 1])[0], out[i]) <= 1e-14


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_lists_work_for_float32_modules(builder, backend):
    """A list has no dtype of its own, so its values are taken as they are."""
    arch = _arch("mse", "float32")
    mod = builder(arch, backend)
    params = mod.init_params()
    x = [[0.5, -1.0, 2.0, 0.25]]
    y = [[0.1, 0.2, 0.3]]
    a = mod.loss_and_grad(params, x, y)
    b = mod.loss_and_grad(params, np.array(x, dtype=np.float32), np.array(y, dtype=np.float32))
    assert a[0] == b[0]
    with pytest.raises(ValueError, match="cast safely"):
        mod.loss(params, np.array(x), y)
