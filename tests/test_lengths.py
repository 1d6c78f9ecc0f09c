"""Padded sequences: the optional ``lengths`` argument of every function that
takes x (every cell, birnn, truncated BPTT, dense and layernorm per step;
steps: all and last; both backends; float64 and float32).

The architectures are test_recurrent.py's (same spec -> same cached build),
so the checks against the reference (which handles padding its own way:
reversing each sample's real steps for a birnn, see bpgen/reference) and
finite differences cost no build.  The padded batch against the same
samples run one by one at their own lengths needs a module of T = 2: one
per case in ONE_BY_ONE, a covering subset (every cell in NumPy, a birnn with
truncation and an lstm with steps: last in C).

Token/attention networks (``TRANSFORMER``: V = 7, T = 4, F = 4, h = 2;
attention causal and not, embeddings with and without positions, in a
residual block) run through the same tables: attention never attends to a
padded key (the reference runs each sample on its own real steps), and the
one-by-one check slices the position table P to the shorter module's steps.
"""
import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import TOLERANCES, rel_err, sample_point
from bpgen.spec import load_spec

from conftest import ROOT  # noqa: F401  (the shared fixtures' module)
from test_recurrent import CASES, C_CASES, N, T, TRUNC, seq_arch

SHORT = 2
# T = 5, truncation every 2: a birnn's backward half of a sample of length 2
# has its boundaries where the full length's would not be ((5 - 2) % 2 == 1)
LENGTHS = np.array([T, SHORT, T - 2])[:N]
assert (T - SHORT) % TRUNC != 0

# transformer rows: tokens in [0, 7), T = 4 steps (case["T"]), F = 4, 2 heads
TT = 4
SCE = "softmax_cross_entropy"


def _tr(name, layers, loss, steps, l2=0.0, in_c=False):
    arch = {"name": name, "input": {"tokens": 7, "steps": TT},
            "layers": [layers[0]] + layers[1:] + [{"type": "dense", "units": 3}],
            "loss": {"type": loss, "steps": steps}}
    if l2:
        arch["regularization"] = {"l2": l2}
    return {"id": name, "cell": name, "steps": steps, "truncate": None, "dtype": "float64",
            "loss": loss, "arch": arch, "in_c": in_c, "T": TT}


EMB, EMB_P = {"type": "embedding", "units": 4}, {"type": "embedding", "units": 4,
                                                  "positions": True}
TRANSFORMER = [
    _tr("len_attn_pos", [EMB_P, {"type": "attention", "heads": 2}], SCE, "all"),
    _tr("len_block_causal", [EMB, {"type": "block", "residual": True, "layers": [
        {"type": "layernorm"}, {"type": "attention", "heads": 2, "causal": True}]}],
        "mse", "last", l2=0.02),
    _tr("len_block_pos", [EMB_P, {"type": "block", "residual": True, "layers": [
        {"type": "layernorm"}, {"type": "attention", "heads": 2}]}], SCE, "all", in_c=True),
]
TR_C = TRANSFORMER[-1]


def _t(case):
    return case.get("T", T)


def _lengths(case):
    return np.array([_t(case), SHORT, _t(case) - 2])[:N]


def _pad_value(spec, x):
    """A value for padded steps of x: another real value, or another token id."""
    return 7.0 if spec.input.bound is None else spec.input.bound - 1


def _params(cases, backends=("numpy", "c")):
    out = []
    for backend in backends:
        for c in cases:
            if backend == "c" and not c["in_c"]:
                continue
            out.append(pytest.param(c, backend, id=f"{backend}-{c['id']}"))
    return out


def _flat(d):
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in d.values()])


# --------------------------------------------------------------------------
# against the reference, and finite differences of the masked loss

@pytest.mark.parametrize("case, backend", _params(CASES + TRANSFORMER))
def test_lengths_against_reference(builder, case, backend):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=13)
    tol = TOLERANCES[case["dtype"]][0]
    lens = _lengths(case)
    out = mod.forward(params, x, lengths=lens)
    assert out.dtype == np.dtype(spec.dtype) and out.shape == (N, _t(case), out.shape[2])
    assert rel_err(out, ref.forward(spec, params, x, lengths=lens)) <= tol
    for n, length in enumerate(lens):
        assert not out[n, length:].any()          # outputs at padded steps are 0
    value, grads = mod.loss_and_grad(params, x, y, lengths=lens)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y, lengths=lens)
    assert abs(value - ref_value) <= tol * max(1.0, abs(ref_value))
    assert abs(mod.loss(params, x, y, lengths=lens) - ref_value) <= tol * max(1.0, ref_value)
    for key, g in grads.items():
        assert g.dtype == np.dtype(spec.dtype)
        assert rel_err(g, ref_grads[key]) <= tol, key
    # padding really is ignored: other values there change nothing
    x2, y2 = x.copy(), y.copy()
    for n, length in enumerate(lens):
        x2[n, length:] = _pad_value(spec, x)
        if case["steps"] == "all":
            y2[n, length:] = y[n, :1]
    assert mod.loss_and_grad(params, x2, y2, lengths=lens)[0] == pytest.approx(value, rel=tol)
    if spec.dtype != "float64" or case["truncate"] or backend == "c":
        return
    # central differences of the masked loss (float64, exact gradient; NumPy:
    # the C module equals the reference above)
    keys = list(params)
    theta = _flat(params)
    shapes = [params[k].shape for k in keys]

    def loss_at(vec):
        parts, at = {}, 0
        for k, s in zip(keys, shapes):
            size = int(np.prod(s))
            parts[k] = vec[at:at + size].reshape(s)
            at += size
        return mod.loss(parts, x, y, lengths=lens)

    eps = 1e-6
    fd = np.array([(loss_at(theta + eps * e) - loss_at(theta - eps * e)) / (2 * eps)
                   for e in np.eye(theta.size)])
    assert rel_err(_flat(grads), fd) <= 1e-5


# --------------------------------------------------------------------------
# a padded batch = the same samples run one by one at their own lengths

def _pick(cases, **want):
    return next(c for c in cases if all(c[k] == v for k, v in want.items()))


ONE_BY_ONE = (
    [pytest.param(_pick(CASES, cell=cell, dtype="float64", steps=steps, truncate=k), "numpy",
                  id=f"numpy-{cell}-{steps}-k{k}")
     for cell, steps, k in [("rnn_tanh", "all", None), ("rnn_relu", "last", TRUNC),
                            ("lstm", "last", None), ("gru", "all", TRUNC),
                            ("birnn_rnn", "last", None), ("birnn_lstm", "all", TRUNC),
                            ("birnn_gru", "last", TRUNC), ("rnn_sigmoid", "all", None)]]
    + [pytest.param(_pick(C_CASES, cell=cell, dtype="float64", truncate=k), "c",
                    id=f"c-{cell}-k{k}")
       for cell, k in [("birnn_rnn", TRUNC), ("lstm", None)]]
    + [pytest.param(c, "numpy", id=f"numpy-{c['id']}") for c in TRANSFORMER]
    + [pytest.param(TR_C, "c", id=f"c-{TR_C['id']}")])


def _at_steps(arch, steps):
    return dict(arch, name=f"{arch['name']}_t{steps}",
                input=dict(arch["input"], steps=steps))


def _cut(d, shapes):
    """``d`` for a module of fewer steps: a position table P keeps its first rows."""
    return {k: d[k][:s[0]] if d[k].shape != s else d[k] for k, s in shapes.items()}


def _grown(d, like):
    """A shorter module's gradient with ``like``'s shapes (zeros in the rows it lacks)."""
    out = {}
    for k, v in like.items():
        out[k] = np.zeros(v.shape)
        out[k][tuple(slice(0, n) for n in d[k].shape)] = d[k]
    return out


@pytest.mark.parametrize("case, backend", ONE_BY_ONE)
def test_padded_batch_equals_one_by_one(builder, case, backend):
    arch = case["arch"]
    spec = load_spec(arch)
    mod = builder(arch, backend)
    # the samples run alone at SHORT steps: the NumPy module of that length
    # (a C one would be one more compile; NumPy equals C to 1e-12 elsewhere)
    short = builder(_at_steps(arch, SHORT), "numpy")
    T = _t(case)
    lengths = np.array([T, SHORT, SHORT, T])
    params, x, y = sample_point(spec, mod, batch=4, seed=21)
    v = sample_point(spec, mod, batch=1, seed=22)[0]
    last = case["steps"] == "last"
    value, grads = mod.loss_and_grad(params, x, y, lengths=lengths)
    hv = mod.hvp(params, x, y, v, lengths=lengths)
    # the masked loss is the mean over the real (sample, step) pairs: each
    # sample's own loss weighs its number of real steps (steps: all) or 1
    weights = np.ones(4) if last else lengths.astype(float)
    weights = weights / weights.sum()
    l2_value = spec.l2 * 0.5 * sum(float(np.sum(params[k] ** 2)) for k in spec.l2_keys)
    want_value, want_g, want_h = 0.0, 0.0, 0.0
    for n, length in enumerate(lengths):
        one = mod if length == T else short
        pn, vv = _cut(params, one.PARAM_SHAPES), _cut(v, one.PARAM_SHAPES)
        xn = x[n:n + 1, :length]
        yn = y[n:n + 1] if last else y[n:n + 1, :length]
        vn, gn = one.loss_and_grad(pn, xn, yn)
        want_value += weights[n] * (vn - l2_value)
        want_g = want_g + weights[n] * _flat(_grown(gn, params))
        want_h = want_h + weights[n] * _flat(_grown(one.hvp(pn, xn, yn, vv), params))
        out = mod.forward(params, x, lengths=lengths)[n, :length]
        assert rel_err(out, one.forward(pn, xn)[0]) <= 1e-12
    # l2 enters once, in every sample's own loss with weight 1 in total
    assert value == pytest.approx(want_value + l2_value, rel=1e-12, abs=1e-13)
    assert rel_err(_flat(grads), want_g) <= 1e-12
    assert rel_err(_flat(hv), want_h) <= 1e-12


# --------------------------------------------------------------------------
# second order with lengths, NumPy against C

SECOND = [_pick(C_CASES, cell="birnn_rnn", dtype="float64"),
          _pick(CASES, cell="lstm", dtype="float64", truncate=TRUNC, steps="all"), TR_C]


@pytest.mark.parametrize("case, backend", _params(SECOND))
def test_second_order_with_lengths(builder, case, backend):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    lens = _lengths(case)
    params, x, y = sample_point(spec, mod, batch=N, seed=31)
    v = sample_point(spec, mod, batch=1, seed=32)[0]
    h = mod.hessian(params, x, y, lengths=lens)
    assert np.array_equal(h, h.T)
    hv = _flat(mod.hvp(params, x, y, v, lengths=lens))
    assert rel_err(h @ _flat(v), hv) <= 1e-10
    assert rel_err(_flat(mod.hessian_diag(params, x, y, lengths=lens)), np.diag(h)) <= 1e-12
    vm = np.stack([_flat(v), np.arange(h.shape[0], dtype=float)], axis=1)
    assert rel_err(mod.hmp(params, x, y, vm, lengths=lens), h @ vm) <= 1e-10
    # = central differences of the (exact) masked gradient
    theta = _flat(params)
    ev = _flat(v)
    eps = 1e-5

    def grad_at(vec):
        parts, at = {}, 0
        for k, p in params.items():
            parts[k] = vec[at:at + p.size].reshape(p.shape)
            at += p.size
        return _flat(ref.exact_loss_and_grad(spec, parts, x, y, lengths=lens)[1])

    fd = (grad_at(theta + eps * ev) - grad_at(theta - eps * ev)) / (2 * eps)
    assert rel_err(hv, fd) <= 1e-6
    if backend == "c":
        mn = builder(case["arch"], "numpy")
        assert rel_err(hv, _flat(mn.hvp(params, x, y, v, lengths=lens))) <= 1e-12
        gv = mod.ggn_vp(params, x, y, v, lengths=lens)
        assert rel_err(_flat(gv), _flat(mn.ggn_vp(params, x, y, v, lengths=lens))) <= 1e-12


# --------------------------------------------------------------------------
# without lengths nothing changes; all lengths = T is the unmasked call

@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_full_lengths_equal_no_lengths(builder, backend):
    case = SECOND[0]
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=41)
    full = np.full(N, T)
    value, grads = mod.loss_and_grad(params, x, y)
    value_m, grads_m = mod.loss_and_grad(params, x, y, lengths=full)
    assert value_m == pytest.approx(value, rel=1e-14)
    assert rel_err(_flat(grads_m), _flat(grads)) <= 1e-13
    assert rel_err(mod.forward(params, x, lengths=full), mod.forward(params, x)) <= 1e-14


# --------------------------------------------------------------------------
# bad lengths

BAD = [
    (np.array([0, 1, 2]), "values must lie in"),
    (np.array([1, max(T, TT) + 1, 2]), "values must lie in"),
    (np.array([1, 2]), "expected shape"),
    (np.array([[1, 2, 3]]), "expected shape"),
    (np.array([1.0, 2.0, 3.0]), "expected integers"),
    (np.array([True, True, True]), "expected integers"),
    ("abc", "expected integers"),
]


@pytest.mark.parametrize("case", [SECOND[0], TR_C], ids=lambda c: c["id"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_bad_lengths(builder, backend, case):
    lens = _lengths(case)
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=1)
    calls = [lambda lg: mod.forward(params, x, lengths=lg),
             lambda lg: mod.loss(params, x, y, lengths=lg),
             lambda lg: mod.loss_and_grad(params, x, y, lg),
             lambda lg: mod.hvp(params, x, y, params, lengths=lg),
             lambda lg: mod.hessian_diag(params, x, y, lengths=lg),
             lambda lg: mod.hmp(params, x, y, np.zeros((mod.N_PARAMS, 1)), lengths=lg)]
    if backend == "c" and mod._FASTCALL:       # the C entry points themselves
        calls.append(lambda lg: mod._c_loss(params, x, y, lengths=lg))
    for lengths, message in BAD:
        for call in calls:
            with pytest.raises(ValueError, match="lengths: " + message):
                call(lengths)
    # any integer dtype is taken
    for dtype in (np.int8, np.uint16, np.int32):
        mod.loss(params, x, y, lengths=lens.astype(dtype))


def test_lengths_refused_without_a_sequence(builder):
    arch = {"name": "flat_l", "input": {"features": 3},
            "layers": [{"type": "dense", "units": 2}], "loss": "mse"}
    mod = builder(arch, "numpy")
    params = mod.init_params()
    with pytest.raises(ValueError, match="lengths: only a network with a sequence input"):
        mod.loss(params, np.zeros((2, 3)), np.zeros((2, 2)), lengths=np.array([1, 1]))


def test_layernorm_and_dense_per_step(builder):
    """dense and layernorm per step after a birnn, steps: last, in NumPy."""
    arch = seq_arch("ln_len", [{"type": "birnn", "cell": "gru", "units": 2},
                               {"type": "layernorm"}, {"type": "dense", "units": 2}],
                    "mse", "last", truncate=TRUNC)
    spec = load_spec(arch)
    mod = builder(arch, "numpy")
    params, x, y = sample_point(spec, mod, batch=N, seed=51)
    value, grads = mod.loss_and_grad(params, x, y, lengths=LENGTHS)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y, lengths=LENGTHS)
    assert value == pytest.approx(ref_value, rel=1e-12)
    for key in grads:
        assert rel_err(grads[key], ref_grads[key]) <= 1e-10, key
