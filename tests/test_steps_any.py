"""``steps: any``: sequences whose T is read from x at call time, like N.

One module built with ``steps: any`` serves calls of different T in
succession (3, then 7, then 5: ``STEP_SEQUENCE``), without rebuilding, and at
each T equals the module built with that fixed T: forward, loss,
loss_and_grad, hvp, ggn_vp, grad_factors, hessian, hessian_diag,
hessian_blocks and hmp, with and without ``lengths`` (to 1e-12 in float64,
1e-5 in float32, relative to each result's scale).  An embedding with
positions then has a table of ``max_steps`` (T_MAX) rows, of which a call
reads the first T: the fixed-T module gets those rows, and the any-module's
derivatives are 0 in the others.

The architectures are test_recurrent.py's (one per cell, the combos of
steps all/last, truncation and dtype rotating over them) plus a stack with
layernorm and dense at every step, and test_lengths.py's transformers
(tokens, embedding with and without positions, attention causal and not,
a residual block); the C backend runs a covering subset against the NumPy
fixed-T modules (NumPy = C at a fixed T is tested elsewhere).  Also: the any
module against the reference, central finite differences, and the errors
(x's features, T > max_steps, empty sequences, lengths > T, y's steps)."""
import re

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import rel_err
from bpgen.spec import SpecError, load_spec

from test_lengths import TRANSFORMER
from test_recurrent import CASES, CELLS, COMBOS, seq_arch

STEP_SEQUENCE = (3, 7, 5)        # successive calls of one module
T_MAX = 8                        # max_steps of the embeddings with positions
N = 3
TOL = {"float64": 1e-12, "float32": 1e-5}


def _any(arch):
    """``arch`` with steps: any (an embedding with positions: max_steps T_MAX)."""
    layers = [dict(lay, max_steps=T_MAX) if lay.get("positions") else lay
              for lay in arch["layers"]]
    return dict(arch, name=f"{arch['name']}_any", layers=layers,
                input=dict(arch["input"], steps="any"))


def _fixed(arch, t):
    return dict(arch, name=f"{arch['name']}_t{t}", input=dict(arch["input"], steps=t))


def _case(arch, case_id, dtype="float64", steps="all", truncate=None):
    return {"id": case_id, "arch": arch, "dtype": dtype, "steps": steps, "truncate": truncate}


# one case per cell, the combos (steps, truncation, dtype) rotating over them
RECURRENT = [_case(c["arch"], c["id"], c["dtype"], c["steps"], c["truncate"])
             for ci, cell in enumerate(CELLS) for c in CASES
             if c["cell"] == cell
             and COMBOS.index((c["steps"], c["truncate"], c["dtype"])) == ci % len(COMBOS)]
assert {(c["steps"], c["truncate"], c["dtype"]) for c in RECURRENT} == set(COMBOS)
STACK = _case(seq_arch("any_stack", [
    {"type": "birnn", "cell": "gru", "units": 2}, {"type": "layernorm"},
    {"type": "dense", "units": 3, "activation": "tanh"}, {"type": "lstm", "units": 2},
    {"type": "dense", "units": 3}], "softmax_cross_entropy", "last", 2, l2=0.02),
    "stack-layernorm-dense", steps="last", truncate=2)
TRANSFORMERS = [_case(c["arch"], c["id"], steps=c["steps"]) for c in TRANSFORMER]
TRANSFORMERS.append(_case(dict(TRANSFORMERS[-1]["arch"], dtype="float32",
                               name=TRANSFORMERS[-1]["arch"]["name"] + "_32"),
                          TRANSFORMERS[-1]["id"] + "-float32", "float32", "all"))
NUMPY_CASES = RECURRENT + [STACK] + TRANSFORMERS


def _pick(cases, case_id):
    return next(c for c in cases if c["id"].startswith(case_id))


C_CASES = [_pick(RECURRENT, "lstm-"), _pick(RECURRENT, "birnn_lstm-"),
           _pick(TRANSFORMERS, "len_block_causal"), _pick(TRANSFORMERS, "len_block_pos")]
assert {c["dtype"] for c in C_CASES} == {"float64", "float32"}


def _params(cases, backend):
    return [pytest.param(c, backend, id=f"{backend}-{c['id']}") for c in cases]


# --------------------------------------------------------------------------
# data at a given T

def _data(mod, spec, t, seed):
    """(params, x, y, v, lengths) for a call of T = t of the any-module."""
    rng = np.random.default_rng(seed)
    params = {k: (a + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype)
              for k, a in mod.init_params(seed).items()}
    if spec.input.bound is None:
        x = rng.standard_normal((N, t, spec.input.shape[1])).astype(spec.dtype)
    else:
        x = rng.integers(0, spec.input.bound, size=(N, t))
    lead = (N, t) if mod.LOSS_ALL_STEPS else (N,)
    if mod.TARGET_KIND == "labels":
        y = rng.integers(0, mod.OUTPUT_UNITS, size=lead)
    else:
        y = rng.uniform(0, 1, size=lead + (mod.OUTPUT_UNITS,)).astype(spec.dtype)
    v = {k: rng.standard_normal(a.shape).astype(a.dtype) for k, a in params.items()}
    lengths = np.array([t, max(1, t - 2), 1])
    return params, x, y, v, lengths


def _cut(d, like):
    """``d`` (any-module shapes) for the fixed-T module: a position table
    keeps its first T rows."""
    return {k: d[k][:like[k][0]] for k in like}


def _flat_index(mod_any, shapes_fixed):
    """For each entry of the fixed module's flat vector, its index in the
    any-module's (the position tables' first T rows)."""
    out, at = [], 0
    for key, shape in mod_any.PARAM_SHAPES.items():
        size = int(np.prod(shape))
        idx = np.arange(at, at + size).reshape(shape)
        out.append(idx[:shapes_fixed[key][0]].ravel())
        at += size
    return np.concatenate(out)


def _grown(d, like):
    """A fixed module's result with the any-module's shapes (0 in the rows of
    a position table a call of T steps does not read)."""
    out = {}
    for k, v in like.items():
        out[k] = np.zeros(v.shape)
        out[k][:d[k].shape[0]] = d[k]
    return out


def _flat(d, like):
    """``d``'s arrays in ``like``'s key order, as one float64 vector."""
    return np.concatenate([np.asarray(d[k], dtype=np.float64).ravel() for k in like])


def _close(a, b, tol, what):
    assert rel_err(a, b) <= tol, f"{what}: {rel_err(a, b):.3g} > {tol}"


def _compare(mod, fixed, params, x, y, v, lengths, tol, rng):
    """Every entry point of the any-module ``mod`` against the fixed-T module."""
    shapes = fixed.PARAM_SHAPES
    pf, vf = _cut(params, shapes), _cut(v, shapes)
    _close(mod.forward(params, x, lengths), fixed.forward(pf, x, lengths), tol, "forward")
    value, grads = mod.loss_and_grad(params, x, y, lengths)
    fvalue, fgrads = fixed.loss_and_grad(pf, x, y, lengths)
    assert abs(value - fvalue) <= tol * max(1.0, abs(fvalue))
    assert abs(mod.loss(params, x, y, lengths) - fvalue) <= tol * max(1.0, abs(fvalue))
    for name, fn in (("loss_and_grad", None), ("hvp", "hvp"), ("ggn_vp", "ggn_vp")):
        got = grads if fn is None else getattr(mod, fn)(params, x, y, v, lengths)
        want = fgrads if fn is None else getattr(fixed, fn)(pf, x, y, vf, lengths)
        want = _grown(want, params)
        assert all(got[k].dtype == params[k].dtype for k in params)
        # relative to the whole result's scale (an entry that is 0 in exact
        # arithmetic, the gradient of attention's key bias, is rounding noise)
        _close(_flat(got, params), _flat(want, params), tol, name)
    got, want = mod.grad_factors(params, x, y, lengths), fixed.grad_factors(pf, x, y, lengths)
    assert got.keys() == want.keys()
    for k in got:
        _close(got[k][0], want[k][0], tol, f"grad_factors[{k}] U")
        _close(got[k][1], want[k][1], tol, f"grad_factors[{k}] V")
    idx = _flat_index(mod, shapes)
    rest = np.setdiff1d(np.arange(mod.N_PARAMS), idx)
    h, hf = mod.hessian(params, x, y, lengths), fixed.hessian(pf, x, y, lengths)
    _close(h[np.ix_(idx, idx)], hf, tol, "hessian")
    assert not h[rest].any() and not h[:, rest].any()   # P's rows beyond T: 0
    _close(mod.flatten(mod.hessian_diag(params, x, y, lengths)), np.diag(h), tol,
           "hessian_diag")
    for name, (keys, block) in mod.hessian_blocks(params, x, y, lengths).items():
        fkeys, fblock = fixed.hessian_blocks(pf, x, y, lengths)[name]
        assert keys == fkeys
        sub = idx[np.isin(idx, _layer_index(mod, keys))] - _layer_index(mod, keys)[0]
        _close(block[np.ix_(sub, sub)], fblock, tol, f"hessian_blocks[{name}]")
    V = rng.standard_normal((mod.N_PARAMS, 2)).astype(h.dtype)
    _close(mod.hmp(params, x, y, V, lengths)[idx], fixed.hmp(pf, x, y, V[idx], lengths), tol,
           "hmp")


def _layer_index(mod, keys):
    """The any-module's flat indices of the parameters ``keys`` (one layer's)."""
    out, at = [], 0
    for key, shape in mod.PARAM_SHAPES.items():
        size = int(np.prod(shape))
        if key in keys:
            out.append(np.arange(at, at + size))
        at += size
    return np.concatenate(out)


# --------------------------------------------------------------------------
# one module, successive T, against the fixed-T modules

@pytest.mark.parametrize("case, backend",
                         _params(NUMPY_CASES, "numpy") + _params(C_CASES, "c"))
def test_any_equals_fixed_steps(builder, case, backend):
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert mod.STEPS == "any" and mod.INPUT_SHAPE[0] is None
    tol = TOL[case["dtype"]]
    rng = np.random.default_rng(5)
    for i, t in enumerate(STEP_SEQUENCE):
        fixed = builder(_fixed(case["arch"], t), "numpy")
        params, x, y, v, lengths = _data(mod, spec, t, seed=40 + i)
        for lens in (None, lengths):
            _compare(mod, fixed, params, x, y, v, lens, tol, rng)


@pytest.mark.parametrize("case", NUMPY_CASES, ids=[c["id"] for c in NUMPY_CASES])
def test_any_against_reference(builder, case):
    """The any-module against the reference (which reads T from x) at two T."""
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, "numpy")
    tol = 1e-8 if case["dtype"] == "float64" else 1e-4
    for t in (2, 6):
        params, x, y, _, lengths = _data(mod, spec, t, seed=60 + t)
        for lens in (None, lengths):
            _close(mod.forward(params, x, lens), ref.forward(spec, params, x, lengths=lens),
                   tol, "forward")
            value, grads = mod.loss_and_grad(params, x, y, lens)
            want_value, want = ref.loss_and_grad(spec, params, x, y, lengths=lens)
            assert abs(value - want_value) <= tol * max(1.0, abs(want_value))
            # at the gradient's scale (attention's key bias has gradient 0)
            _close(_flat(grads, grads), _flat(want, grads), tol, "grad")


FD_CASES = [_pick(RECURRENT, "gru-"), _pick(TRANSFORMERS, "len_attn_pos")]
assert all(c["truncate"] is None and c["dtype"] == "float64" for c in FD_CASES)


@pytest.mark.parametrize("case", FD_CASES, ids=[c["id"] for c in FD_CASES])
def test_any_finite_differences(builder, case):
    """The gradient of the any-module against central differences of its
    loss at T = 7 with lengths (a position table's unread rows: 0 both)."""
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, "numpy")
    params, x, y, _, lengths = _data(mod, spec, 7, seed=3)
    _, grads = mod.loss_and_grad(params, x, y, lengths)
    theta = mod.flatten(params)
    eps = 1e-6
    fd = np.array([(mod.loss(mod.unflatten(theta + eps * e), x, y, lengths)
                    - mod.loss(mod.unflatten(theta - eps * e), x, y, lengths)) / (2 * eps)
                   for e in np.eye(theta.size)])
    assert rel_err(mod.flatten(grads), fd) <= 1e-6


# --------------------------------------------------------------------------
# errors

ERROR_CASES = [(_pick(RECURRENT, "lstm-"), "numpy"), (_pick(TRANSFORMERS, "len_attn_pos"), "numpy"),
               (_pick(C_CASES, "len_block_pos"), "c")]


@pytest.mark.parametrize("case, backend", ERROR_CASES,
                         ids=[f"{b}-{c['id']}" for c, b in ERROR_CASES])
def test_any_errors(builder, case, backend):
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y, _, lengths = _data(mod, spec, 4, seed=9)
    tokens = spec.input.bound is not None
    wrong = x[:, :, None] if tokens else np.concatenate([x, x[:, :, :1]], axis=2)
    want = r"\(N, T\)" if tokens else rf"\(N, T, {spec.input.shape[1]}\)"
    with pytest.raises(ValueError, match=rf"^x: expected shape {want}"):
        mod.loss(params, wrong, y)
    with pytest.raises(ValueError, match=r"^x: the sequences are empty \(T = 0\)"):
        mod.forward(params, x[:, :0])
    with pytest.raises(ValueError, match=r"^lengths: values must lie in \[1, 4\] \(T = 4\)"):
        mod.loss(params, x, y, lengths + 1)
    if mod.LOSS_ALL_STEPS:           # y's steps are x's
        _, x5, y5, _, _ = _data(mod, spec, 5, seed=9)
        with pytest.raises(ValueError, match=r"^y: expected shape"):
            mod.loss(params, x, y5)
    if tokens and any(lay.get("positions") for lay in arch["layers"]):
        long = np.zeros((N, T_MAX + 1), dtype=np.int64)
        with pytest.raises(ValueError, match=rf"^x: T = {T_MAX + 1} steps, more than "
                                             rf"max_steps = {T_MAX}"):
            mod.forward(params, long)
        mod.forward(params, long[:, :T_MAX])        # T_MAX itself is fine


# --------------------------------------------------------------------------
# the spec: steps: any and max_steps

def _tokens(steps, emb):
    return {"name": "tok", "input": {"tokens": 5, "steps": steps},
            "layers": [{"type": "embedding", "units": 2, **emb},
                       {"type": "dense", "units": 2}], "loss": "mse"}


@pytest.mark.parametrize("steps, emb, where, message", [
    ("any", {"positions": True}, "layers[0].max_steps", "needs max_steps"),
    (4, {"positions": True, "max_steps": 6}, "layers[0].max_steps",
     "6 differs from the input's steps 4"),
    ("any", {"max_steps": 6}, "layers[0].max_steps", "it needs positions: true"),
    ("any", {"positions": True, "max_steps": 0}, "layers[0].max_steps",
     "expected a positive integer"),
    ("any", {"positions": True, "max_steps": "8"}, "layers[0].max_steps",
     "expected a positive integer"),
    ("anything", {}, "input.steps", "expected a positive integer or any"),
])
def test_max_steps_spec_errors(steps, emb, where, message):
    with pytest.raises(SpecError, match=rf": {re.escape(where)}: .*{re.escape(message)}"):
        load_spec(_tokens(steps, emb))


def test_max_steps_spec():
    spec = load_spec(_tokens("any", {"positions": True, "max_steps": 6}))
    assert spec.layers[0].params[1].shape == (6, 2)            # P is (T_max, F)
    assert spec.canonical()["input"]["shape"] == ["any"]
    assert spec.canonical()["layers"][0]["max_steps"] == 6
    # with a fixed T, max_steps equal to T is the same architecture as without
    same = load_spec(_tokens(4, {"positions": True, "max_steps": 4}))
    assert same.content_hash() == load_spec(_tokens(4, {"positions": True})).content_hash()
    assert load_spec(_tokens("any", {})).canonical()["layers"][0].get("max_steps") is None
    feats = load_spec({"name": "f", "input": {"features": 2, "steps": "any"},
                       "layers": [{"type": "lstm", "units": 2}], "loss": "mse"})
    assert feats.canonical()["input"]["shape"] == ["any", 2]
