"""``steps: any``: sequences whose T is read from x at call time, like N.

One module built with ``steps: any`` serves calls of different T in
succession (3, then 7, then 5: ``STEP_SEQUENCE``), without rebuilding, and at
each T equals the module built with that fixed T: forward, loss,
loss_and_grad, hvp, ggn_vp, grad_factors, per-sample gradients, norms and
the clipped gradient, hessian, hessian_diag,
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

def _data(mod, spec, t, seed, n=N):
    """(params, x, y, v, lengths) for a call of T = t, N = n of the any-module."""
    rng = np.random.default_rng(seed)
    params = {k: (a + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype)
              for k, a in mod.init_params(seed).items()}
    if spec.input.bound is None:
        x = rng.standard_normal((n, t, spec.input.shape[1])).astype(spec.dtype)
    else:
        x = rng.integers(0, spec.input.bound, size=(n, t))
    lead = (n, t) if mod.LOSS_ALL_STEPS else (n,)
    if mod.TARGET_KIND == "labels":
        y = rng.integers(0, mod.OUTPUT_UNITS, size=lead)
    else:
        y = rng.uniform(0, 1, size=lead + (mod.OUTPUT_UNITS,)).astype(spec.dtype)
    v = {k: rng.standard_normal(a.shape).astype(a.dtype) for k, a in params.items()}
    lengths = np.array([t, max(1, t - 2), 1] * n)[:n]
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
        # a position table's one-hot U: T_max columns here, T in the fixed module
        _close(got[k][0][:, :want[k][0].shape[1]], want[k][0], tol, f"grad_factors[{k}] U")
        _close(got[k][1], want[k][1], tol, f"grad_factors[{k}] V")
    # per-sample gradients, their norms and the clipped gradient (a row's
    # count per sample is T, read from x)
    got, want = mod.per_sample_grads(params, x, y, lengths), fixed.per_sample_grads(pf, x, y, lengths)
    for k in got:
        assert got[k].shape == (len(x),) + params[k].shape
        assert not got[k][:, want[k].shape[1]:].any()       # P's rows beyond T: 0
    # relative to the whole result's scale (attention's key bias: 0 + rounding)
    _close(np.concatenate([got[k][:, :want[k].shape[1]].reshape(len(x), -1) for k in got], 1),
           np.concatenate([want[k].reshape(len(x), -1) for k in got], 1), tol, "per_sample_grads")
    norms = mod.per_sample_grad_norms(params, x, y, lengths)
    _close(norms, fixed.per_sample_grad_norms(pf, x, y, lengths), tol, "per_sample_grad_norms")
    max_norm = float(np.median(norms))
    cl, cg, cn = mod.clipped_grad(params, x, y, max_norm, lengths)
    fl, fg, fn = fixed.clipped_grad(pf, x, y, max_norm, lengths)
    assert abs(cl - fl) <= tol * max(1.0, abs(fl))
    _close(_flat(cg, params), _flat(_grown(fg, params), params), tol, "clipped_grad")
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


# --------------------------------------------------------------------------
# C: every generated function stays in bounds at every T (test_c_bounds.py's
# canaries, with the sizes the wrapper computes for this call's T)

def _c_signatures(mod):
    """name -> the names of bpg_<name>'s pointer inputs (between N, T and out, ws)."""
    from bpgen.backends.c.emitter import PREFIX
    sigs = {}
    for m in re.finditer(r"void bpg_(\w+)\(([^)]*)\);", mod.CDEF):
        names = [re.split(r"[\s*]+", arg.strip())[-1] for arg in m.group(2).split(",")]
        if names[-2:] == ["out", "ws"]:
            assert names[:2] == ["N", "T"], m.group(0)
            sigs[m.group(1)] = [n[len(PREFIX):] for n in names[2:-2]]
    return sigs


@pytest.mark.parametrize("case", C_CASES, ids=[c["id"] for c in C_CASES])
def test_any_c_functions_stay_in_bounds(builder, case):
    from test_c_bounds import UINT, _canaries_intact, _padded
    from test_per_sample import per_sample_calls_stay_in_bounds
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, "c")
    dtype, sigs = mod.DTYPE, _c_signatures(mod)
    assert set(mod._OUTPUTS) <= set(sigs)
    fb, ptr = mod.ffi.from_buffer, mod._PTR
    for t, n in ((1, 2), (3, 1), (7, 4)):
        params, x, y, v, lengths = _data(mod, spec, t, seed=t, n=n)
        xm, _ = mod._check_x(x)
        arrays = {"x": xm, "y": mod._check_y(y, n, xm)}
        arrays.update(zip(("mask", "cut_mask"), mod._masks(lengths, n, t)))
        for key, mat, vmat in zip(mod.PARAM_SHAPES, mod._check_params(params),
                                  mod._check_params(v, "v")):
            arrays[key.replace(".", "_")] = mat
            arrays["v_" + key.replace(".", "_")] = vmat
        for name in mod._OUTPUTS:
            what = f"bpg_{name}, N={n}, T={t}"
            inputs = [arrays[arg] for arg in sigs[name]]
            expected = mod._call(name, n, [inputs[0], t, *inputs[1:]])   # the wrapper's
            layout = mod._layout(name, t)
            out_size = sum(p[2] for p in layout) * n + sum(p[3] for p in layout)
            ws_size = mod._at(mod._WS[name][0], t) * n + mod._at(mod._WS[name][1], t)
            padded_in = [_padded(arr, arr.size, arr.dtype) for arr in inputs]
            saved_in = [buf.copy() for buf, _ in padded_in]
            out_buf, out = _padded(None, out_size, dtype, fill=np.nan)
            ws_buf, ws = _padded(None, ws_size, dtype, fill=np.nan)
            getattr(mod.lib, "bpg_" + name)(
                n, t, *[fb("int64_t *" if mid.dtype.kind == "i" else ptr, mid)
                        for _, mid in padded_in],
                fb(ptr, out, require_writable=True), fb(ptr, ws, require_writable=True))
            for (buf, _), saved, arg in zip(padded_in, saved_in, sigs[name]):
                assert np.array_equal(buf.view(UINT[buf.dtype]),
                                      saved.view(UINT[buf.dtype])), f"{what}: {arg} modified"
            assert _canaries_intact(out_buf, out_size, dtype), f"{what}: wrote outside out"
            assert _canaries_intact(ws_buf, ws_size, dtype), f"{what}: wrote outside ws"
            assert not np.isnan(out).any(), f"{what}: output entries never written"
            assert rel_err(out, expected[:out_size]) <= TOL[case["dtype"]], what
        # the per-sample functions' (their rows per sample are T)
        args = mod._terms_inputs(params, x, y, lengths)[4]
        per_sample_calls_stay_in_bounds(mod, n, [args[0], *args[2:]], TOL[case["dtype"]], t)


@pytest.mark.parametrize("case", C_CASES, ids=[c["id"] for c in C_CASES])
def test_any_hessian_columns_stay_in_bounds(builder, case):
    """bpg_hessian_columns at T = 2 and 6: exactly count x N_PARAMS outputs,
    its workspace (a polynomial in N and T, and kc directions' part) kept,
    rows equal to hvp of the unit vectors."""
    from test_c_bounds import _canaries_intact, _padded
    arch = _any(case["arch"])
    spec = load_spec(arch)
    mod = builder(arch, "c")
    dtype, p, tol = mod.DTYPE, mod.N_PARAMS, TOL[case["dtype"]]
    fb, ptr = mod.ffi.from_buffer, mod._PTR
    for t in (2, 6):
        params, x, y, _, lengths = _data(mod, spec, t, seed=t)
        xm, n = mod._check_x(x)
        inputs = [xm, *mod._masks(lengths, n, t), mod._check_y(y, n, xm),
                  *mod._check_params(params)]
        for first, count, kc in ((0, 1, 1), (p - 3, 3, 2), (0, p, 4)):
            out_buf, out = _padded(None, count * p, dtype, fill=np.nan)
            wa, wb = (mod._at(w, t) for w in mod._WS["hessian_columns"])
            da, db = (mod._at(d, t) for d in mod._WS_DIR["hessian_columns"])
            ws_size = wa * n + wb + kc * (da * n + db)
            ws_buf, ws = _padded(None, ws_size, dtype, fill=np.nan)
            mod.lib.bpg_hessian_columns(
                n, t, *[fb("int64_t *" if a.dtype.kind == "i" else ptr, a) for a in inputs],
                mod.ffi.NULL, fb(ptr, out, require_writable=True),
                fb(ptr, ws, require_writable=True), first, count, kc)
            assert _canaries_intact(out_buf, count * p, dtype)
            assert _canaries_intact(ws_buf, ws_size, dtype)
            assert not np.isnan(out).any()
            for j in range(0, count, max(1, count // 4)):
                e = np.zeros(p, dtype=dtype)
                e[first + j] = 1
                want = mod.flatten(mod.hvp(params, x, y, mod.unflatten(e), lengths))
                assert rel_err(out[j * p:(j + 1) * p], want) <= tol
