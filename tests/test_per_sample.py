"""Per-sample gradients, their norms and the clipped gradient (issue 19):
``per_sample_grads``, ``per_sample_grad_norms`` and ``clipped_grad`` of
every architecture family the other suites build (the architectures of
test_second_order.py: dense, rnn/lstm/gru/birnn with and without truncation,
steps all and last, layernorm, conv + pooling + flatten, embedding with
positions, attention, residual blocks; test_conv.py's conv/pooling nets;
test_lengths.py's padded-sequence cases; float32 twins), plus a few wider
networks on which the derivation picks the Gram form of the norm with
several rows per sample (an lstm, an embedding over a large vocabulary, a
conv kernel with few output pixels).

The oracles are independent of the generated code: each sample run alone
through the reference (plain NumPy backpropagation, bpgen/reference) with
N = 1 (its l2 term removed), and central finite differences (a five-point
stencil, step 2e-4: rounding ~1e-12, truncation ~h⁴) of one sample's reference loss.  Then: the
mean over samples plus the l2 gradient is loss_and_grad's; the norms are
those of per_sample_grads, in the Gram and in the explicit form alike;
clipped_grad is the explicit clipping of per_sample_grads; NumPy equals C;
padded sequences (lengths) against each sample alone at its own length;
bad arguments and a result too large for memory are refused."""
import os

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec

from conftest import mlp
from test_conv import CASES as CONV_CASES, _arch as conv_arch
from test_lengths import ONE_BY_ONE, SHORT
from test_second_order import CASES as SECOND_ORDER, F32_CASES
from test_transformer import _arch as transformer_arch

N = 3
TOL = {"float64": 1e-10, "float32": 2e-4}
SCE = "softmax_cross_entropy"

# wider networks: the Gram form with several rows per sample
WIDE = {
    "lstm-wide-gram": {
        "name": "ps_lstm_wide", "input": {"features": 6, "steps": 3},
        "layers": [{"type": "lstm", "units": 8}, {"type": "dense", "units": 2}],
        "loss": "mse", "regularization": {"l2": 0.01}},
    "embedding-vocab-gram": {
        "name": "ps_emb_vocab", "input": {"tokens": 40, "steps": 3},
        "layers": [{"type": "embedding", "units": 3, "positions": True},
                   {"type": "dense", "units": 4, "activation": "tanh"},
                   {"type": "dense", "units": 3}],
        "loss": {"type": SCE, "steps": "last"}},
    "conv-few-pixels-gram": {
        "name": "ps_conv_gram", "input": {"channels": 2, "height": 5, "width": 5},
        "layers": [{"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2,
                    "activation": "tanh"},
                   {"type": "avgpool2d", "size": 2, "stride": 1}, {"type": "flatten"},
                   {"type": "dense", "units": 3}],
        "loss": SCE, "regularization": {"l2": 0.02}},
    # a table whose per-sample gradient is formed (cheaper than its Gram form
    # over r = 20 rows) and larger (1,200 numbers a sample) than the rest of
    # the C workspace per sample: C clipped_grad does not keep it
    "embedding-steps-formed": {
        "name": "ps_emb_formed", "input": {"tokens": 400, "steps": 20},
        "layers": [{"type": "embedding", "units": 3}, {"type": "dense", "units": 3}],
        "loss": {"type": SCE, "steps": "last"}},
}


def _case(cid, arch, in_c, exact=True):
    return {"id": cid, "arch": arch, "in_c": in_c, "exact": exact,
            "dtype": arch.get("dtype", "float64")}


CASES = ([_case(cid, arch, in_c, exact=twin is None and not arch.get("bptt"))
          for cid, (arch, in_c, twin) in SECOND_ORDER.items()]
         + [_case(cid, arch, in_c) for cid, (arch, in_c) in F32_CASES.items()]
         + [_case(f"conv-{cid}", conv_arch(cid, "float64"), cid == "two-stages")
            for cid in CONV_CASES]
         + [_case("conv-k3s2-tanh-avg-f32", conv_arch("k3s2-tanh-avg", "float32"), True),
            _case("block-prenorm-f32", transformer_arch("block-prenorm-sce-last", "float32"),
                  True)]
         + [_case(cid, arch, True) for cid, arch in WIDE.items()])
BY_ID = {c["id"]: c for c in CASES}

# the coverage the module docstring promises
_TYPES = {lay.get("cell", lay["type"]) for c in CASES for lay in c["arch"]["layers"]}
assert _TYPES >= {"dense", "rnn", "lstm", "gru", "conv2d", "maxpool2d", "avgpool2d", "flatten",
                  "layernorm", "embedding", "attention", "block"}
assert any(c["arch"].get("bptt") for c in CASES if c["in_c"])
assert {c["dtype"] for c in CASES if c["in_c"]} == {"float64", "float32"}


def _runs(cases, backends=("numpy", "c")):
    return [pytest.param(c, b, id=f"{b}-{c['id']}") for b in backends for c in cases
            if b == "numpy" or c["in_c"]]


def _flat(d):
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in d.values()])


def _point(spec, mod, seed=7, batch=N):
    return sample_point(spec, mod, batch=batch, seed=seed)


def _data_grad(spec, params, g):
    """A gradient without its l2 term."""
    return {k: np.asarray(v, dtype=np.float64) - (spec.l2 * np.asarray(params[k], np.float64)
                                                  if k in spec.l2_keys else 0.0)
            for k, v in g.items()}


def _alone(spec, params, x, y, n, lengths=None):
    """Sample n's gradient from the reference with N = 1, without l2."""
    lens = None if lengths is None else lengths[n:n + 1]
    return _data_grad(spec, params, ref.loss_and_grad(spec, params, x[n:n + 1], y[n:n + 1],
                                                      lengths=lens)[1])


def _gram_capable(entry):
    kinds = {t[0] for t in entry[2]}
    return bool(entry[2]) and (kinds == {"product"} or (kinds == {"scatter"}
                                                         and len(entry[2]) == 1))


# --------------------------------------------------------------------------
# per_sample_grads against the reference, one sample at a time

@pytest.mark.parametrize("case, backend", _runs(CASES))
def test_per_sample_grads_against_each_sample_alone(builder, case, backend):
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    params, x, y = _point(spec, mod)
    psg = mod.per_sample_grads(params, x, y)
    assert list(psg) == list(mod.PARAM_SHAPES)
    for key, g in psg.items():
        assert g.shape == (N,) + mod.PARAM_SHAPES[key] and g.dtype == mod.DTYPE
        assert g.flags.c_contiguous
    tol = TOL[case["dtype"]]
    for n in range(N):
        want = _alone(spec, params, x, y, n)
        assert rel_err(_flat({k: v[n] for k, v in psg.items()}), _flat(want)) <= tol, n
    # the mean over samples plus the l2 gradient is the batch gradient
    _, grads = mod.loss_and_grad(params, x, y)
    mean = {k: v.astype(np.float64).mean(axis=0) for k, v in psg.items()}
    assert rel_err(_flat(mean), _flat(_data_grad(spec, params, grads))) <= tol


def _stencil(f, p, key, i, h=2e-4):
    """Five-point central difference of f along coordinate i of p[key]."""
    flat = p[key].reshape(-1)
    old = flat[i]
    vals = []
    for step in (2, 1, -1, -2):
        flat[i] = old + step * h
        vals.append(f(p))
    flat[i] = old
    return (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)


# smooth activations (no kink within the stencil), the exact gradient (no truncation)
FD_CASES = [BY_ID[c] for c in ("dense-tanh-mse", "dense-gelu-bce", "rnn-mse-all",
                               "gru-bce-all-l2", "birnn_lstm-sce-all", "layernorm-tanh-sce",
                               "conv-avg-mse-pad", "attn-causal-sce-all",
                               "block-prenorm-sce-last", *WIDE)]


@pytest.mark.parametrize("case", FD_CASES, ids=[c["id"] for c in FD_CASES])
def test_per_sample_grads_against_finite_differences(builder, case):
    spec, mod = load_spec(case["arch"]), builder(case["arch"], "numpy")
    params, x, y = _point(spec, mod, seed=11)
    psg = mod.per_sample_grads(params, x, y)
    n = 1
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}

    def f(p):       # sample n's loss term, without l2
        return ref.loss(spec, p, x[n:n + 1], y[n:n + 1]) - ref.regularization(spec, p)

    fd = {k: np.array([_stencil(f, p64, k, i) for i in range(v.size)]).reshape(v.shape)
          for k, v in p64.items()}
    assert rel_err(_flat({k: v[n] for k, v in psg.items()}), _flat(fd)) <= 1e-9


def _fd_per_sample(spec, params, x, y):
    """(N, N_PARAMS): every sample's gradient by five-point differences of
    its own reference loss (without l2)."""
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    rows = []
    for n in range(len(x)):
        def f(p, n=n):
            return ref.loss(spec, p, x[n:n + 1], y[n:n + 1]) - ref.regularization(spec, p)
        rows.append(np.concatenate([[_stencil(f, p64, k, i) for i in range(v.size)]
                                    for k, v in p64.items()]))
    return np.stack(rows)


@pytest.mark.parametrize("case, backend", _runs(FD_CASES))
def test_norms_and_clipped_against_finite_differences(builder, case, backend):
    """The three functions of both backends (C: one generated call each,
    bpg_per_sample_grads, bpg_per_sample_grad_norms, bpg_clipped_grad)
    against every sample's gradient from finite differences of its own
    loss, its norm, and the explicit clipping of those."""
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    params, x, y = _point(spec, mod, seed=13)
    per = _fd_per_sample(spec, params, x, y)
    psg = mod.per_sample_grads(params, x, y)
    assert rel_err(np.stack([_flat({k: v[n] for k, v in psg.items()}) for n in range(N)]),
                   per) <= 1e-9
    want = np.linalg.norm(per, axis=1)
    assert rel_err(mod.per_sample_grad_norms(params, x, y), want) <= 1e-9
    for max_norm in (float(np.median(want)), 0.5 * float(want.min())):
        loss, clipped, norms = mod.clipped_grad(params, x, y, max_norm)
        assert rel_err(norms, want) <= 1e-9
        explicit = (np.minimum(1.0, max_norm / want)[:, None] * per).mean(axis=0)
        assert rel_err(_flat(clipped), explicit) <= 1e-9


# the C functions called directly, their buffers between canaries (as
# test_c_bounds.py does for every function of _OUTPUTS)
BOUNDS_CASES = [BY_ID[c] for c in ("dense-relu-sce-l2", "lstm-sce-last-k2", "conv-two-stages",
                                   "block-prenorm-f32", "lstm-wide-gram", "embedding-vocab-gram",
                                   "conv-few-pixels-gram", "gru-bce-all-l2",
                                   "embedding-steps-formed")]


def per_sample_calls_stay_in_bounds(mod, n, args, tol, t=None):
    """bpg_per_sample_grads, bpg_per_sample_grad_norms and bpg_clipped_grad
    of C module ``mod`` called directly on ``args`` (the wrapper's: x, masks, y, parameters;
    ``t``: T with steps: any), out and ws filled with NaN between canaries:
    no input modified, nothing written outside out and ws, every output
    written and equal to the wrapper's call."""
    from test_c_bounds import UINT, _canaries_intact, _padded
    fb, ptr, dtype = mod.ffi.from_buffer, mod._PTR, mod.DTYPE
    norms = mod._per_sample_native("per_sample_grad_norms", n,
                                   args if t is None else [args[0], t, *args[1:]])[1:1 + n]
    max_norm = float(np.median(norms))
    for name, clip in (("per_sample_grads", ()), ("per_sample_grad_norms", ()),
                       ("clipped_grad", (max_norm,))):
        what = f"bpg_{name}, N={n}, T={t}"
        expected = mod._per_sample_native(name, n, args if t is None else [args[0], t, *args[1:]],
                                          *clip)
        wa, wb = (mod._at(v, t) for v in mod._WS[name])
        ws_size = wa * n + wb
        padded_in = [_padded(arr, arr.size, arr.dtype) for arr in args]
        saved = [buf.copy() for buf, _ in padded_in]
        out_buf, out = _padded(None, expected.size, dtype, fill=np.nan)
        ws_buf, ws = _padded(None, ws_size, dtype, fill=np.nan)
        getattr(mod.lib, "bpg_" + name)(
            n, *(() if t is None else (t,)),
            *[fb("int64_t *" if mid.dtype.kind == "i" else ptr, mid) for _, mid in padded_in],
            *clip, fb(ptr, out, require_writable=True), fb(ptr, ws, require_writable=True))
        for (buf, _), before in zip(padded_in, saved):
            assert np.array_equal(buf.view(UINT[buf.dtype]), before.view(UINT[buf.dtype])), what
        assert _canaries_intact(out_buf, expected.size, dtype), f"{what}: wrote outside out"
        assert _canaries_intact(ws_buf, ws_size, dtype), f"{what}: wrote outside ws"
        assert not np.isnan(out).any(), f"{what}: output entries never written"
        assert rel_err(out, expected) <= tol, what


@pytest.mark.parametrize("case", BOUNDS_CASES, ids=[c["id"] for c in BOUNDS_CASES])
def test_c_per_sample_functions_stay_in_bounds(builder, case):
    spec, mod = load_spec(case["arch"]), builder(case["arch"], "c")
    assert {"per_sample_grads", "per_sample_grad_norms", "clipped_grad"} <= set(mod._WS)
    for n in (1, 4):
        params, x, y = _point(spec, mod, seed=n, batch=n)
        lengths = (None if not mod.STEPS else np.maximum(1, mod.STEPS - np.arange(n)))
        _, xm, ym, _, args = mod._terms_inputs(params, x, y, lengths)
        per_sample_calls_stay_in_bounds(mod, n, args, TOL[case["dtype"]] / 10)


# --------------------------------------------------------------------------
# norms and the clipped gradient

@pytest.mark.parametrize("case, backend", _runs(CASES))
def test_norms_and_clipped_grad(builder, case, backend):
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    params, x, y = _point(spec, mod, seed=3)
    tol = TOL[case["dtype"]]
    psg = mod.per_sample_grads(params, x, y)
    per = np.stack([_flat({k: v[n] for k, v in psg.items()}) for n in range(N)])
    want = np.linalg.norm(per, axis=1)
    norms = mod.per_sample_grad_norms(params, x, y)
    assert norms.shape == (N,) and norms.dtype == mod.DTYPE
    assert rel_err(norms, want) <= tol
    value = mod.loss(params, x, y)
    _, grads = mod.loss_and_grad(params, x, y)
    # a bound between the norms (some clipped, some not), and one above all
    for max_norm in (float(np.median(want)), 0.3 * float(want.min()), 10 * float(want.max())):
        loss, clipped, cn = mod.clipped_grad(params, x, y, max_norm)
        assert isinstance(loss, float) and loss == pytest.approx(value, rel=1e-6 if
                                                                 tol > 1e-8 else 1e-12)
        assert rel_err(cn, want) <= tol
        factor = np.minimum(1.0, max_norm / want)
        explicit = (factor[:, None] * per).mean(axis=0)
        assert list(clipped) == list(mod.PARAM_SHAPES)
        for key, g in clipped.items():
            assert g.shape == mod.PARAM_SHAPES[key] and g.dtype == mod.DTYPE
        assert rel_err(_flat(clipped), explicit) <= tol
        if max_norm > want.max():         # nothing clipped: the data gradient
            assert rel_err(_flat(clipped), _flat(_data_grad(spec, params, grads))) <= tol
        else:
            clipped_norms = np.linalg.norm(factor[:, None] * per, axis=1)
            assert clipped_norms.max() <= max_norm * (1 + tol)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_gram_form_equals_explicit_form(builder, case, monkeypatch):
    """Every parameter whose norm has both forms gives the same norms in
    either (the generation-time choice only changes the cost)."""
    spec, mod = load_spec(case["arch"]), builder(case["arch"], "numpy")
    params, x, y = _point(spec, mod, seed=5)
    norms = mod.per_sample_grad_norms(params, x, y)
    flipped = 0
    for key, entry in list(mod._GRAD_TERMS.items()):
        if _gram_capable(entry):
            other = "explicit" if entry[0] == "gram" else "gram"
            monkeypatch.setitem(mod._GRAD_TERMS, key, (other,) + entry[1:])
            flipped += 1
    assert flipped
    assert rel_err(mod.per_sample_grad_norms(params, x, y), norms) <= TOL[case["dtype"]]


def test_wide_networks_use_the_gram_form(builder):
    """The derivation picks the Gram form where r²(a+d) < r·a·d, with
    several rows per sample: the lstm's input weight, the embedding table
    over 40 tokens, the conv kernel over 4 output pixels."""
    want = {"lstm-wide-gram": ["l0.Wx", "l0.Wh"], "embedding-vocab-gram": ["l0.E"],
            "conv-few-pixels-gram": ["l0.W"]}
    for cid, keys in want.items():
        mod = builder(WIDE[cid], "numpy")
        for key in keys:
            norm, _, terms = mod._GRAD_TERMS[key]
            assert norm == "gram" and terms[0][3] > 1, (cid, key)


@pytest.mark.parametrize("cid, kept", [("conv-two-stages", True), ("block-prenorm-f32", True),
                                       ("embedding-steps-formed", False)])
def test_c_clipped_grad_keeps_the_formed_gradients_that_fit(builder, cid, kept):
    """C clipped_grad keeps the per-sample gradients its norm pass forms
    (N of each) while they take at most the rest of its workspace per
    sample, and then sums them weighted by the clip factors (cᵀ·G); else
    (a large table) it forms Uᵀ·diag(c)·V as the other parameters do.
    Either way its result is checked in test_norms_and_clipped_grad and
    test_c_per_sample_functions_stay_in_bounds; here, that both ways are
    taken, as the generated code states next to each parameter."""
    mod = builder(BY_ID[cid]["arch"], "c")
    with open(os.path.join(os.path.dirname(mod.__file__), mod.C_FILE)) as f:
        source = f.read()
    body = source.split("void bpg_clipped_grad(", 1)[1].split("\n}\n", 1)[0]
    formed = [key for key, (norm, _, terms) in mod._GRAD_TERMS.items()
              if terms[0][0] == "product" and norm == "explicit"
              or terms[0][0] == "colsum" and terms[0][3] != 1
              or terms[0][0] == "scatter" and norm != "gram"]
    assert formed
    for key in formed:
        stated = body.split(f"/* {key}: ", 1)[1].split("\n", 1)[0]
        assert stated.endswith("; kept */") == kept, (key, stated)
    wa, wb = mod._WS["clipped_grad"]
    assert (wa, wb) >= tuple(mod._WS["per_sample_grad_norms"])


def test_c_clipped_grad_keeps_none_when_the_rest_cannot_be_scaled(builder, monkeypatch):
    """When the parameters not kept have no in-place scaling of their own
    (made so here: none today), C clipped_grad keeps nothing and scales
    every factor as before; its result still the explicit clipping."""
    from bpgen.backends.c import per_sample as c_per_sample
    scaled, everything = c_per_sample._scaled, []

    def only_all(plans, f):
        everything[:] = everything or list(plans)
        if len(plans) < len(everything):
            raise c_per_sample.Unsupported("made unsupported for this test")
        return scaled(plans, f)

    monkeypatch.setattr(c_per_sample, "_scaled", only_all)
    arch = dict(BY_ID["conv-two-stages"]["arch"], name="ps_keep_none")
    spec, mc = load_spec(arch), builder(arch, "c")
    monkeypatch.undo()
    with open(os.path.join(os.path.dirname(mc.__file__), mc.C_FILE)) as f:
        body = f.read().split("void bpg_clipped_grad(", 1)[1].split("\n}\n", 1)[0]
    assert "bpg_ps_scale_rows" in body and "; kept */" not in body and "kept_" not in body
    mn = builder(BY_ID["conv-two-stages"]["arch"], "numpy")
    params, x, y = _point(spec, mn, seed=4, batch=4)
    norms = mn.per_sample_grad_norms(params, x, y)
    (lc, gc, nc), (ln, gn, _) = (m.clipped_grad(params, x, y, float(np.median(norms)))
                                 for m in (mc, mn))
    assert lc == pytest.approx(ln, rel=1e-12) and rel_err(nc, norms) <= 1e-12
    assert rel_err(_flat(gc), _flat(gn)) <= 1e-12


@pytest.mark.parametrize("case", [c for c in CASES if c["in_c"]],
                         ids=[c["id"] for c in CASES if c["in_c"]])
def test_numpy_matches_c(builder, case):
    spec = load_spec(case["arch"])
    mn, mc = builder(case["arch"], "numpy"), builder(case["arch"], "c")
    params, x, y = _point(spec, mn, seed=9, batch=5)
    tol = 1e-12 if case["dtype"] == "float64" else 1e-5
    assert rel_err(_flat(mc.per_sample_grads(params, x, y)),
                   _flat(mn.per_sample_grads(params, x, y))) <= tol
    norms = mn.per_sample_grad_norms(params, x, y)
    assert rel_err(mc.per_sample_grad_norms(params, x, y), norms) <= tol
    max_norm = float(np.median(norms))
    lc, gc, nc = mc.clipped_grad(params, x, y, max_norm)
    ln, gn, nn = mn.clipped_grad(params, x, y, max_norm)
    assert lc == pytest.approx(ln, rel=tol) and rel_err(nc, nn) <= tol
    assert rel_err(_flat(gc), _flat(gn)) <= tol


# --------------------------------------------------------------------------
# padded sequences

@pytest.mark.parametrize("case, backend", ONE_BY_ONE)
def test_with_lengths(builder, case, backend):
    """With lengths, sample n's gradient is its own masked loss's (the mean
    over its real steps, the reference at N = 1) times N·L_n/ΣL (steps:
    all: the batch is a mean over all real pairs) or 1 (steps: last), so
    that the mean over samples is still loss_and_grad's."""
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    T = case.get("T", spec.input.steps)
    lengths = np.array([T, SHORT, SHORT, T - 1])
    params, x, y = _point(spec, mod, seed=23, batch=4)
    psg = mod.per_sample_grads(params, x, y, lengths=lengths)
    weights = (np.ones(4) if case["steps"] == "last"
               else 4 * lengths / lengths.sum())
    for n in range(4):
        want = {k: weights[n] * v for k, v in _alone(spec, params, x, y, n, lengths).items()}
        assert rel_err(_flat({k: v[n] for k, v in psg.items()}), _flat(want)) <= 1e-10, n
    _, grads = mod.loss_and_grad(params, x, y, lengths=lengths)
    mean = {k: v.mean(axis=0) for k, v in psg.items()}
    assert rel_err(_flat(mean), _flat(_data_grad(spec, params, grads))) <= 1e-12
    per = np.stack([_flat({k: v[n] for k, v in psg.items()}) for n in range(4)])
    want_norms = np.linalg.norm(per, axis=1)
    assert rel_err(mod.per_sample_grad_norms(params, x, y, lengths=lengths), want_norms) <= 1e-12
    max_norm = float(np.median(want_norms))
    loss, clipped, norms = mod.clipped_grad(params, x, y, max_norm, lengths=lengths)
    assert loss == pytest.approx(mod.loss(params, x, y, lengths=lengths), rel=1e-12)
    factor = np.minimum(1.0, max_norm / want_norms)
    assert rel_err(_flat(clipped), (factor[:, None] * per).mean(axis=0)) <= 1e-12
    assert rel_err(norms, want_norms) <= 1e-12


# --------------------------------------------------------------------------
# errors

BAD_MAX_NORM = [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf"), "1.0", None, True,
                [1.0], np.array([1.0, 2.0]), np.array(-1.0), np.bool_(True), 1j, {"a": 1}]


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_bad_arguments(builder, backend):
    case = BY_ID["lstm-sce-last-k2"]
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    params, x, y = _point(spec, mod)
    for bad in BAD_MAX_NORM:
        with pytest.raises(ValueError, match="^max_norm: "):
            mod.clipped_grad(params, x, y, bad)
    for fn in (mod.per_sample_grads, mod.per_sample_grad_norms,
               lambda *a, **k: mod.clipped_grad(*a, max_norm=1.0, **k)):
        with pytest.raises(ValueError, match="^lengths: "):
            fn(params, x, y, lengths=np.zeros(N, dtype=int))
        with pytest.raises(ValueError, match="^x: "):
            fn(params, x[:, :, :1], y)
        with pytest.raises(ValueError, match="^y: "):
            fn(params, x, y[:1])
        with pytest.raises(ValueError, match="^params: missing key"):
            fn({k: v for k, v in list(params.items())[1:]}, x, y)
        with pytest.raises(ValueError, match="^x: contains NaN"):
            fn(params, np.where(x > 0, np.nan, x), y)
    for good in (2, 0.5, np.float32(0.5), np.int64(3), np.array(0.5)):
        assert mod.clipped_grad(params, x, y, good)[1].keys() == params.keys()
    before = {k: v.copy() for k, v in params.items()}, x.copy(), y.copy()
    mod.clipped_grad(params, x, y, 1.0)
    mod.per_sample_grads(params, x, y)
    assert all(np.array_equal(before[0][k], params[k]) for k in params)
    assert np.array_equal(before[1], x) and np.array_equal(before[2], y)
    # a float32 module refuses float64 data like every function
    m32 = builder(BY_ID["lstm-mse-all-f32"]["arch"], "numpy")
    p32, x32, y32 = _point(load_spec(BY_ID["lstm-mse-all-f32"]["arch"]), m32)
    with pytest.raises(ValueError, match="^x: dtype float64"):
        m32.per_sample_grad_norms(p32, x32.astype(np.float64), y32)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_per_sample_grads_refused_before_allocating(builder, backend, monkeypatch):
    """N·N_PARAMS numbers over the memory limit: a ValueError giving the
    bytes, raised before the generated function runs; the norms and the
    clipped gradient (O(N·r²) memory) still run."""
    arch = mlp("relu", SCE, hidden=(200,), out=4, features=20, l2=0.01, name="ps_wide_mlp")
    spec, mod = load_spec(arch), builder(arch, backend)
    params, x, y = _point(spec, mod, batch=64)
    assert mod.N_PARAMS * mod.DTYPE.itemsize > mod._BYTES_PER_SAMPLE
    need = 64 * mod.N_PARAMS * mod.DTYPE.itemsize
    monkeypatch.setattr(mod, "MAX_RESULT_BYTES", need - 1)
    norms = mod.per_sample_grad_norms(params, x, y)
    mod.clipped_grad(params, x, y, 1.0)

    def never(*args):
        raise AssertionError("ran before refusing")

    monkeypatch.setattr(mod, "_run", never)
    with pytest.raises(ValueError, match=f"per_sample_grads .*needs {need:,} bytes"):
        mod.per_sample_grads(params, x, y)
    monkeypatch.undo()          # the limit back: it runs, and agrees with the norms
    psg = mod.per_sample_grads(params, x, y)
    per = np.concatenate([v.reshape(64, -1) for v in psg.values()], axis=1)
    assert rel_err(np.linalg.norm(per, axis=1), norms) <= 1e-12


def test_c_workspace_refused_before_allocating(builder, monkeypatch):
    """The C per-sample functions' workspace (sized by the generator: the
    factors, Gram matrices, one formed gradient, the clip factors) beyond
    the memory limit is a ValueError saying the bytes, before it is
    allocated or the C code runs."""
    case = BY_ID["lstm-wide-gram"]
    spec, mod = load_spec(case["arch"]), builder(case["arch"], "c")
    params, x, y = _point(spec, mod)
    wa, wb = mod._WS["clipped_grad"]
    need = (wa * N + wb) * mod.DTYPE.itemsize
    assert mod._WS["per_sample_grad_norms"] == (wa, wb)
    monkeypatch.setattr(mod, "MAX_RESULT_BYTES", need - 1)
    monkeypatch.setattr(mod, "_BYTES_PER_SAMPLE", 1)       # x's own check passes
    monkeypatch.setattr(mod, "_buffer", lambda *a: pytest.fail("allocated"))
    for fn in (mod.per_sample_grad_norms, lambda *a: mod.clipped_grad(*a, 1.0)):
        with pytest.raises(ValueError, match=f"^x: .* needs {need:,} bytes of workspace"):
            fn(params, x, y)


def test_c_module_without_the_c_per_sample_calls(builder, monkeypatch):
    """A C module whose summands the generated per-sample calls do not take
    (none today: made so here) has none of the three in C; its per-sample
    functions run the shared runtime's NumPy products on the C factors,
    and agree with the NumPy module."""
    from bpgen.backends.c import per_sample as c_per_sample

    def refuse(plan):
        raise c_per_sample.Unsupported("made unsupported for this test")

    monkeypatch.setattr(c_per_sample, "_one_term", refuse)
    arch = mlp("tanh", SCE, hidden=(5,), out=3, features=4, l2=0.01, name="ps_python_route")
    spec, mc = load_spec(arch), builder(arch, "c")
    monkeypatch.undo()
    assert not {"per_sample_grads", "per_sample_grad_norms", "clipped_grad"} & set(mc._WS)
    mn = builder(arch, "numpy")
    params, x, y = _point(spec, mn, seed=2, batch=4)
    assert rel_err(_flat(mc.per_sample_grads(params, x, y)),
                   _flat(mn.per_sample_grads(params, x, y))) <= 1e-12
    norms = mn.per_sample_grad_norms(params, x, y)
    assert rel_err(mc.per_sample_grad_norms(params, x, y), norms) <= 1e-12
    (lc, gc, nc), (ln, gn, _) = (m.clipped_grad(params, x, y, float(np.median(norms)))
                                 for m in (mc, mn))
    assert lc == pytest.approx(ln, rel=1e-12) and rel_err(nc, norms) <= 1e-12
    assert rel_err(_flat(gc), _flat(gn)) <= 1e-12


@pytest.mark.parametrize("cid", list(WIDE))
def test_the_choice_is_stated(builder, cid):
    """bpgen show and the generated module's comments say, for every
    parameter, its summands and the norm's form chosen from the shapes."""
    from bpgen.show import render
    mod = builder(WIDE[cid], "numpy")
    text = render(WIDE[cid]).split("Per-sample gradients", 1)[1]
    with open(mod.__file__) as f:
        source = f.read()
    for key, (norm, _, terms) in mod._GRAD_TERMS.items():
        assert f"\n  {key}: " in text and f"# {key}: {norm} (" in source
        assert any(line.strip().startswith(f"norm: {norm} (") for line in
                   text.split(f"\n  {key}: ", 1)[1].splitlines()[1:2])


# the architectures benchmarks/peers.py writes in PyTorch (dense, tanh rnn,
# lstm, conv/pooling, embedding/attention/layernorm/blocks)
TORCH_CASES = ["dense-relu-sce-l2", "rnn-mse-all", "lstm-wide-gram", "conv-max-sce",
               "attn-causal-sce-all", "block-prenorm-sce-last", "embedding-vocab-gram"]


@pytest.mark.parametrize("case, backend", _runs([BY_ID[c] for c in TORCH_CASES]))
def test_against_torch_func_vmap(builder, case, backend):
    """per_sample_grads, the norms and the clipped gradient against
    torch.func.vmap(torch.func.grad(one sample's loss)) (the issue's
    held-out oracle), on the networks benchmarks/peers.py writes in PyTorch."""
    torch = pytest.importorskip("torch", reason="torch is not installed: the torch.func "
                                                "oracle of per-sample gradients is skipped")
    import os
    import sys
    from conftest import ROOT
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import peers
    from torch.func import grad, vmap
    arch = {k: v for k, v in case["arch"].items() if k != "regularization"}
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    params, x, y = _point(spec, mod, seed=17, batch=4)
    loss_fn = peers._torch_loss(arch)
    P = {k: torch.tensor(v) for k, v in params.items()}
    per = vmap(grad(lambda P, xi, yi: loss_fn(P, xi[None], yi[None])), in_dims=(None, 0, 0))
    want = {k: v.numpy() for k, v in per(P, torch.from_numpy(x), torch.from_numpy(y)).items()}
    psg = mod.per_sample_grads(params, x, y)
    assert rel_err(_flat(psg), _flat(want)) <= 1e-10
    flat = np.stack([_flat({k: v[n] for k, v in want.items()}) for n in range(4)])
    norms = np.linalg.norm(flat, axis=1)
    assert rel_err(mod.per_sample_grad_norms(params, x, y), norms) <= 1e-10
    max_norm = float(np.median(norms))
    clipped = (np.minimum(1.0, max_norm / norms)[:, None] * flat).mean(axis=0)
    assert rel_err(_flat(mod.clipped_grad(params, x, y, max_norm)[1]), clipped) <= 1e-10


def test_a_gradient_without_a_per_sample_form(builder, monkeypatch):
    """A parameter whose gradient summand the derivation cannot split by
    sample (no layer has one today: made so here) still builds; the three
    functions then raise NotImplementedError naming it, and bpgen show says so."""
    from bpgen import derivation
    from bpgen.show import render
    real = derivation._term

    def term(g, d, part, shape, keep):
        if part.startswith("d_l1_W") or "l1_W" in part:
            raise NotImplementedError(f"per-sample gradients: {part} made unsupported")
        return real(g, d, part, shape, keep)

    monkeypatch.setattr(derivation, "_term", term)
    arch = mlp("tanh", "mse", hidden=(3,), out=2, features=2, name="ps_unsupported")
    plans = {p.key: p for p in derivation.derive_all(load_spec(arch)).meta.grad_terms}
    assert plans["l1.W"].norm == "unsupported" and plans["l0.W"].norm != "unsupported"
    assert "l1.W: 0\n      norm: unsupported" in render(arch)
    mod = builder(arch, "numpy")
    params, x, y = _point(load_spec(arch), mod)
    for fn in (mod.per_sample_grads, mod.per_sample_grad_norms,
               lambda *a: mod.clipped_grad(*a, 1.0)):
        with pytest.raises(NotImplementedError, match="l1.W: .*made unsupported"):
            fn(params, x, y)
    assert mod.loss_and_grad(params, x, y)[0] == mod.loss(params, x, y)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_threads_calling_at_once(builder, backend):
    """Each thread has its own factor buffer (C): calls from several threads
    at once give the results of the same calls one after another."""
    import concurrent.futures
    case = BY_ID["lstm-wide-gram"]
    spec, mod = load_spec(case["arch"]), builder(case["arch"], backend)
    points = [_point(spec, mod, seed=40 + i, batch=2 + i) for i in range(4)]

    def run(point):
        params, x, y = point
        loss, clipped, norms = mod.clipped_grad(params, x, y, 0.1)
        return _flat(mod.per_sample_grads(params, x, y)), norms, _flat(clipped), loss

    serial = [run(p) for p in points]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(run, points), serial):
                assert all(np.array_equal(a, b) for a, b in zip(got, want))
