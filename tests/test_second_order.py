"""Second-order functions of generated modules: ``hvp``, ``hessian``,
``ggn_vp``, ``hessian_diag``, ``hessian_blocks``, ``grad_factors``,
:func:`bpgen.spectrum` and ``bpgen spectrum`` on the command line.

Data-driven over layer types: dense MLPs (several activations, every loss,
l2 on some) and small sequence nets (rnn, lstm, gru, birnn with each cell;
``steps: all`` and ``last``; truncated BPTT on some), float64 throughout plus
a float32 spot check.  The oracles are independent of the generated code:
central finite differences of the reference's exact gradient, of the
module's own gradient, of the reference's forward pass (the Jacobian J) and
of the reference's output error (the loss Hessian H_L w.r.t. the output).

Sizes are tiny (N_PARAMS <= ~80; the attention nets up to 130) so that finite-difference Hessians take
milliseconds.  The NumPy backend runs every case, the C backend a covering
subset (every layer type and cell, birnn with the rnn and gru cells, both
step modes, every loss, one truncated net, l2).
C builds dominate the running time on a cold cache, so the first C module
requested compiles all of this file's C modules into the cache in parallel
(one process per CPU); the real ``bpgen.build`` calls then hit the cache.
"""
import concurrent.futures
import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import bpgen
from bpgen import reference as ref
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec

from conftest import ROOT, mlp

N = 3                   # batch
T = 4                   # steps (3 for the larger birnn cells)
K = 2                   # units of the dense head after a recurrent layer
TRUNC = 2
WEIGHTS = ("W", "Wx", "Wh", "Wq", "Wk", "Wv", "Wo")
TABLES = ("E", "P")     # an embedding's tables: onehot(index)ᵀ·δ
SCE, BCE = "softmax_cross_entropy", "sigmoid_binary_cross_entropy"


def seq(name, layer, loss, steps, truncate=None, l2=0.0, t=T, f=2, dtype="float64", k=K):
    """A sequence net: one recurrent layer and a dense head of k units at every step."""
    arch = {"name": name, "dtype": dtype, "input": {"features": f, "steps": t},
            "layers": [layer, {"type": "dense", "units": k}],
            "loss": {"type": loss, "steps": steps}}
    if truncate:
        arch["bptt"] = {"truncate": truncate}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


def _dense(act, loss, l2=0.0, dtype="float64"):
    out = 3 if loss == SCE else 2
    return mlp(act, loss, dtype, hidden=(4, 3), out=out, features=3, l2=l2,
               name=f"so_d_{act}_{loss[:3]}_{dtype[-2:]}")


# id -> (architecture, also built in C?, id of the untruncated twin or None)
CASES = {}


def _add(cid, arch, in_c, twin=None):
    CASES[cid] = (arch, in_c, twin)


_add("dense-tanh-mse", _dense("tanh", "mse"), False)
_add("dense-relu-sce-l2", _dense("relu", SCE, l2=0.05), True)
_add("dense-gelu-bce", _dense("gelu", BCE), True)
_add("dense-elu-mse-l2", _dense("elu", "mse", l2=0.02), False)
_add("dense-softplus-sce", _dense("softplus", SCE), False)
_add("dense-silu-bce-l2", _dense("silu", BCE, l2=0.03), False)
# one output unit: the head's bias gradient is a total (sum over all), which
# hessian_columns' tangent pass then sums per direction
_add("rnn-mse-all", seq("so_rnn", {"type": "rnn", "units": 3}, "mse", "all", k=1), True)
_add("lstm-sce-last", seq("so_lstm", {"type": "lstm", "units": 2}, SCE, "last"), True)
_add("lstm-sce-last-k2", seq("so_lstm_k", {"type": "lstm", "units": 2}, SCE, "last",
                             truncate=TRUNC), True, twin="lstm-sce-last")
_add("gru-bce-all-l2", seq("so_gru", {"type": "gru", "units": 2}, BCE, "all",
                           l2=0.03), True)
_add("gru-bce-all-l2-k2", seq("so_gru_k", {"type": "gru", "units": 2}, BCE, "all",
                              truncate=TRUNC, l2=0.03), False, twin="gru-bce-all-l2")
_add("birnn_rnn-mse-last-l2", seq("so_birnn", {"type": "birnn", "cell": "rnn", "units": 2},
                                  "mse", "last", l2=0.02), True)
_add("birnn_lstm-sce-all", seq("so_bilstm", {"type": "birnn", "cell": "lstm", "units": 2},
                               SCE, "all", t=3, f=1), False)
_add("birnn_gru-bce-last", seq("so_bigru", {"type": "birnn", "cell": "gru", "units": 2},
                               BCE, "last", t=3, f=1), True)
_add("birnn_gru-bce-last-k2", seq("so_bigru_k", {"type": "birnn", "cell": "gru", "units": 2},
                                  BCE, "last", t=3, f=1, truncate=TRUNC), False,
     twin="birnn_gru-bce-last")

_add("layernorm-tanh-sce", {
    "name": "so_ln", "input": {"features": 3},
    "layers": [{"type": "dense", "units": 4, "activation": "tanh"}, {"type": "layernorm"},
               {"type": "dense", "units": 3}],
    "loss": SCE, "regularization": {"l2": 0.02}}, True)
_add("rnn-layernorm-mse-all", {
    "name": "so_rnn_ln", "input": {"features": 2, "steps": 3},
    "layers": [{"type": "rnn", "units": 3}, {"type": "layernorm"},
               {"type": "dense", "units": K}],
    "loss": "mse"}, True)

_add("conv-max-sce", {
    "name": "so_conv", "input": {"channels": 1, "height": 5, "width": 5},
    "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "activation": "tanh"},
               {"type": "maxpool2d", "size": 2, "stride": 1}, {"type": "flatten"},
               {"type": "dense", "units": 3}],
    "loss": SCE, "regularization": {"l2": 0.02}}, True)
# patches C makes in chunks of 2 samples (12,996 entries a sample; emitter.py)
_add("conv-large-patches", {
    "name": "so_conv_big", "input": {"channels": 1, "height": 40, "width": 40},
    "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "activation": "tanh"},
               {"type": "maxpool2d", "size": 8}, {"type": "flatten"},
               {"type": "dense", "units": 3}],
    "loss": SCE}, True)
_add("conv-avg-mse-pad", {
    "name": "so_conv_avg", "input": {"channels": 2, "height": 4, "width": 3},
    "layers": [{"type": "conv2d", "filters": 2, "kernel": 2, "stride": 2, "padding": 1,
                "activation": "softplus"},
               {"type": "avgpool2d", "size": 2}, {"type": "flatten"},
               {"type": "dense", "units": 2, "activation": "sigmoid"}],
    "loss": "mse"}, False)

# transformer layers: token ids through an embedding, multi-head attention
# (causal or not), pre-norm residual blocks; sequence and last-step losses
_add("attn-causal-sce-all", {
    "name": "so_attn", "input": {"tokens": 5, "steps": 3},
    "layers": [{"type": "embedding", "units": 4, "positions": True},
               {"type": "attention", "heads": 2, "causal": True},
               {"type": "dense", "units": 3}],
    "loss": SCE}, True)
_add("attn-mse-last-l2", {
    "name": "so_attn_seq", "input": {"features": 4, "steps": 3},
    "layers": [{"type": "attention", "heads": 2}, {"type": "dense", "units": 2}],
    "loss": {"type": "mse", "steps": "last"}, "regularization": {"l2": 0.02}}, True)
_add("block-prenorm-sce-last", {
    "name": "so_block", "input": {"tokens": 5, "steps": 3},
    "layers": [{"type": "embedding", "units": 2},
               {"type": "block", "residual": True, "layers": [
                   {"type": "layernorm"}, {"type": "attention", "heads": 2, "causal": True}]},
               {"type": "block", "residual": True, "layers": [
                   {"type": "layernorm"}, {"type": "dense", "units": 4, "activation": "gelu"},
                   {"type": "dense", "units": 2}]},
               {"type": "dense", "units": 3}],
    "loss": {"type": SCE, "steps": "last"}, "regularization": {"l2": 0.01}}, True)

F32_CASES = {
    "dense-tanh-sce-f32": (_dense("tanh", SCE, l2=0.01, dtype="float32"), True),
    "lstm-mse-all-f32": (seq("so_lstm32", {"type": "lstm", "units": 2}, "mse", "all",
                             dtype="float32"), False),
}

# the coverage the module docstring promises
_c = [cid for cid, (_, in_c, _) in CASES.items() if in_c]
assert {CASES[c][0]["layers"][0].get("cell", CASES[c][0]["layers"][0]["type"])
        for c in _c} == {"dense", "rnn", "lstm", "gru", "conv2d", "embedding", "attention"}
assert {CASES[c][0]["layers"][0]["type"] for c in _c} >= {"dense", "rnn", "lstm", "gru", "birnn"}
assert {CASES[c][0]["layers"][0]["cell"] for c in CASES
        if CASES[c][0]["layers"][0]["type"] == "birnn"} == {"rnn", "lstm", "gru"}
for _loss in ("mse", SCE, BCE):
    assert any(a["loss"] == _loss for a, _, _ in CASES.values())
    assert any(isinstance(a["loss"], dict) and a["loss"]["type"] == _loss
               for a, _, _ in CASES.values())
assert any(CASES[c][0].get("bptt") for c in _c)
for _a, _, _ in list(CASES.values()) + [(a, 0, 0) for a, _ in F32_CASES.values()]:
    assert sum(int(np.prod(s)) for s in load_spec(_a).param_shapes.values()) <= 130

# a small architecture for the command line (C backend, its default)
CLI_YAML = """\
name: so_cli
input: {features: 3}
layers:
  - {type: dense, units: 4, activation: tanh}
  - {type: dense, units: 3}
loss: softmax_cross_entropy
regularization: {l2: 0.01}
"""


# --------------------------------------------------------------------------
# building

@pytest.fixture(scope="module")
def cli_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "so_cli.yaml"
    path.write_text(CLI_YAML)
    return path


@pytest.fixture(scope="module")
def warm_c(tmp_path_factory, cli_yaml):
    """Compile every C module of this file into the cache, in parallel, once."""
    state = {"done": False}

    def warm():
        if state["done"]:
            return
        state["done"] = True
        archs = [a for a, in_c, _ in CASES.values() if in_c]
        archs += [a for a, in_c in F32_CASES.values() if in_c]
        archs.sort(key=lambda a: a["layers"][0]["type"] != "birnn")  # slowest first
        jobs = archs + [str(cli_yaml)]
        root = tmp_path_factory.mktemp("warm")
        workers = max(1, min(os.cpu_count() or 1, len(jobs)))
        ctx = multiprocessing.get_context("spawn")
        try:
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(bpgen.build, job, "c", str(root / f"w{i}"))
                           for i, job in enumerate(jobs)]
                concurrent.futures.wait(futures)
        except Exception:   # only an optimisation: the real builds report errors
            pass
    return warm


@pytest.fixture(scope="module")
def get(builder, warm_c):
    """get(case id, backend) -> (spec, module, twin module or None)."""
    def get(cid, backend):
        if backend == "c":
            warm_c()
        if cid in F32_CASES:
            arch = F32_CASES[cid][0]
            return load_spec(arch), builder(arch, backend), None
        arch, _, twin = CASES[cid]
        twin_mod = builder(CASES[twin][0], backend) if twin else None
        return load_spec(arch), builder(arch, backend), twin_mod
    return get


def _params(ids=None, numpy_only=False):
    out = []
    ids = list(CASES) if ids is None else ids
    for backend in ("numpy", "c"):
        for cid in ids:
            if backend == "c" and (numpy_only or not CASES[cid][1]):
                continue
            out.append(pytest.param(cid, backend, id=f"{backend}-{cid}"))
    return out


C_IDS = [cid for cid, (_, in_c, _) in CASES.items() if in_c]
TRUNCATED = [cid for cid, (_, _, twin) in CASES.items() if twin]


# --------------------------------------------------------------------------
# helpers

def _point(spec, mod, seed=3):
    return sample_point(spec, mod, batch=N, seed=seed)


def _p64(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def _weight_mask(shapes):
    """1 on the flat entries of weights (W, Wx, Wh: the l2 term's), else 0."""
    return np.concatenate([np.full(int(np.prod(s)), k.rsplit(".", 1)[1] in WEIGHTS, float)
                           for k, s in shapes.items()])


def _hvp_flat(mod, params, x, y, vec):
    return mod.flatten(mod.hvp(params, x, y, mod.unflatten(vec)))


def _columns(mod, fn, params, x, y):
    """The matrix whose column j is fn(params, x, y, e_j), unsymmetrised."""
    n = mod.N_PARAMS
    out = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n, dtype=mod.DTYPE)
        e[j] = 1
        out[:, j] = mod.flatten(fn(params, x, y, mod.unflatten(e)))
    return out


def _fd_ggn(spec, params, x, y):
    """Jᵀ H_L J + l2 * (weight mask), from finite differences of the reference:
    J of its forward pass w.r.t. the flat parameters, H_L of its output error
    w.r.t. the output."""
    p64 = _p64(params)
    jac = ref.finite_difference_jacobian(lambda p: ref.forward(spec, p, x), p64, eps=1e-6)
    out = ref.forward(spec, p64, x)
    h_l = ref.finite_difference_jacobian(lambda d: ref.output_grad(spec, d["out"], y),
                                         {"out": out}, eps=1e-5)
    h_l = 0.5 * (h_l + h_l.T)
    return jac.T @ h_l @ jac + spec.l2 * np.diag(_weight_mask(spec.param_shapes))


def _sym_err(m):
    return float(np.max(np.abs(m - m.T)) / max(np.max(np.abs(m)), 1e-300))


# --------------------------------------------------------------------------
# the Hessian against finite differences; symmetry

@pytest.mark.parametrize("cid, backend", _params())
def test_hessian_matches_finite_differences(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod)
    h = mod.hessian(params, x, y)
    assert h.shape == (mod.N_PARAMS, mod.N_PARAMS) and mod.N_PARAMS <= 130
    assert h.dtype == np.float64 and h.flags.c_contiguous
    # FD of the reference's exact gradient (truncation ignored)
    assert rel_err(h, ref.finite_difference_hessian(spec, params, x, y, 1e-5)) <= 1e-6
    if not spec.truncate:
        # FD of the module's own gradient, unsymmetrised
        fd = ref.finite_difference_jacobian(
            lambda p: mod.flatten(mod.loss_and_grad(p, x, y)[1]), _p64(params), eps=1e-5)
        assert rel_err(h, fd) <= 1e-6
    # the returned Hessian is symmetric to the last bit ...
    assert np.array_equal(h, h.T)
    # ... and so, to rounding, are the hvp columns it is assembled from
    cols = _columns(mod, mod.hvp, params, x, y)
    assert _sym_err(cols) <= 1e-10
    # hvp(e_j)·e_i == hvp(e_i)·e_j, one call per column: first/last parameter
    # (different layers), and a few random pairs
    n = mod.N_PARAMS
    eye = np.eye(n)
    scale = np.max(np.abs(cols))
    pairs = [(0, n - 1), (n // 3, 2 * n // 3)]
    pairs += [tuple(p) for p in np.random.default_rng(0).integers(0, n, size=(4, 2))]
    for i, j in pairs:
        hij = _hvp_flat(mod, params, x, y, eye[j]) @ eye[i]
        hji = _hvp_flat(mod, params, x, y, eye[i]) @ eye[j]
        assert abs(hij - hji) <= 1e-10 * scale, (i, j)
    assert rel_err(h, 0.5 * (cols + cols.T)) <= 1e-12


@pytest.mark.parametrize("cid, backend", _params())
def test_hvp_is_hessian_times_v_and_linear(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=4)
    h = mod.hessian(params, x, y)
    rng = np.random.default_rng(1)
    v1, v2 = rng.standard_normal((2, mod.N_PARAMS))
    hv1 = mod.hvp(params, x, y, mod.unflatten(v1))
    assert list(hv1) == list(mod.PARAM_SHAPES)
    for key, arr in hv1.items():
        assert arr.shape == mod.PARAM_SHAPES[key] and arr.dtype == np.float64
    hv1 = mod.flatten(hv1)
    hv2 = _hvp_flat(mod, params, x, y, v2)
    assert rel_err(hv1, h @ v1) <= 1e-10
    assert rel_err(hv2, h @ v2) <= 1e-10
    a, b = 0.7, -2.5
    assert rel_err(_hvp_flat(mod, params, x, y, a * v1 + b * v2), a * hv1 + b * hv2) <= 1e-10
    assert not _hvp_flat(mod, params, x, y, np.zeros(mod.N_PARAMS)).any()
    # v is not modified
    vd = mod.unflatten(v1)
    copy = {k: a.copy() for k, a in vd.items()}
    mod.hvp(params, x, y, vd)
    assert all(np.array_equal(vd[k], copy[k]) for k in vd)


@pytest.mark.parametrize("cid, backend", _params(TRUNCATED))
def test_truncation_leaves_second_order_exact(get, cid, backend):
    spec, mod, exact = get(cid, backend)
    assert spec.truncate and exact is not None
    params, x, y = _point(spec, mod, seed=5)
    # truncation does change the gradient here ...
    g, g_exact = mod.loss_and_grad(params, x, y)[1], exact.loss_and_grad(params, x, y)[1]
    assert max(rel_err(g[k], g_exact[k]) for k in g) > 1e-3
    # ... but hvp and hessian are those of the exact loss
    v = mod.unflatten(np.random.default_rng(2).standard_normal(mod.N_PARAMS))
    hv, hv_exact = mod.hvp(params, x, y, v), exact.hvp(params, x, y, v)
    for key in hv:
        assert rel_err(hv[key], hv_exact[key]) <= 1e-12, key
    assert rel_err(mod.hessian(params, x, y), exact.hessian(params, x, y)) <= 1e-12


# --------------------------------------------------------------------------
# Gauss-Newton

@pytest.mark.parametrize("cid, backend", _params())
def test_ggn_vp_matches_jacobians(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=6)
    g_fd = _fd_ggn(spec, params, x, y)
    rng = np.random.default_rng(3)
    for _ in range(2):
        v = rng.standard_normal(mod.N_PARAMS)
        gv = mod.ggn_vp(params, x, y, mod.unflatten(v))
        assert list(gv) == list(mod.PARAM_SHAPES)
        assert rel_err(mod.flatten(gv), g_fd @ v) <= 1e-6
    g = _columns(mod, mod.ggn_vp, params, x, y)
    assert rel_err(g, g_fd) <= 1e-6
    assert _sym_err(g) <= 1e-10
    evals = np.linalg.eigvalsh(0.5 * (g + g.T))
    assert evals[0] >= -1e-10 * evals[-1]


@pytest.mark.parametrize("cid, backend", _params())
def test_hmp_equals_hessian_times_v(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=11)
    V = np.random.default_rng(3).normal(size=(mod.N_PARAMS, 4))
    got = mod.hmp(params, x, y, V)
    assert got.shape == (mod.N_PARAMS, 4) and got.flags.c_contiguous
    assert rel_err(got, mod.hessian(params, x, y) @ V) <= 1e-10
    assert mod.hmp(params, x, y, np.zeros((mod.N_PARAMS, 0))).shape == (mod.N_PARAMS, 0)


BATCHED_IDS = ["rnn-mse-all", "lstm-sce-last-k2", "birnn_gru-bce-last", "layernorm-tanh-sce",
               "block-prenorm-sce-last"]


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("cid", BATCHED_IDS)
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_directions_at_once(get, cid, chunk, backend, monkeypatch):
    """hmp (and hessian of networks without the dense structure) push up to
    HESSIAN_CHUNK directions through one tangent pass (the directions as
    extra columns): chunks of 1, of 3 (a remainder at the end) and all at
    once give hessian() and hmp() equal to hvp column by column, to
    rounding, in both backends."""
    spec, mod, _ = get(cid, backend)
    if backend == "c":                   # the batched form was emitted
        assert mod._WS_DIR["hessian_columns"] != (0, 0)
    else:
        assert callable(mod._tangent_columns)
    params, x, y = _point(spec, mod, seed=5)
    n = mod.N_PARAMS
    monkeypatch.setattr(mod, "HESSIAN_CHUNK", chunk)
    monkeypatch.setattr(mod, "HESSIAN_CHUNK_BYTES", 2**40)
    cols = _columns(mod, mod.hvp, params, x, y)
    assert rel_err(mod.hessian(params, x, y), (cols + cols.T) / 2) <= 1e-12
    V = np.random.default_rng(chunk).normal(size=(n, 7))
    V[:, 2] = 0                       # a zero direction among the others
    got = mod.hmp(params, x, y, V)
    assert rel_err(got, cols @ V) <= 1e-12
    assert not got[:, 2].any()


# --------------------------------------------------------------------------
# diagonal, blocks, gradient factors

@pytest.mark.parametrize("cid, backend", _params())
def test_hessian_diag_and_blocks(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=7)
    h = mod.hessian(params, x, y)
    diag = mod.hessian_diag(params, x, y)
    assert list(diag) == list(mod.PARAM_SHAPES)
    for key, arr in diag.items():
        assert arr.shape == mod.PARAM_SHAPES[key]
    assert rel_err(mod.flatten(diag), np.diag(h)) <= 1e-12

    offsets, off = {}, 0
    for key, shape in mod.PARAM_SHAPES.items():
        offsets[key] = np.arange(off, off + int(np.prod(shape)))
        off += int(np.prod(shape))
    blocks = mod.hessian_blocks(params, x, y)
    with_params = [layer.name for layer in spec.layers if layer.params]
    assert list(blocks) == with_params
    covered = []
    for name, (keys, block) in blocks.items():
        assert list(keys) == [k for k in mod.PARAM_SHAPES if k.split(".", 1)[0] == name]
        idx = np.concatenate([offsets[k] for k in keys])
        assert block.shape == (idx.size, idx.size)
        assert rel_err(block, h[np.ix_(idx, idx)]) <= 1e-12, name
        covered += list(keys)
    assert covered == list(mod.PARAM_SHAPES)


def _data_rows(spec):
    """Rows of U's data part: one per sample, or per sample and step in a
    sequence net (the recurrent layer and the dense head at every step)."""
    return N * (spec.input.steps or 1)


@pytest.mark.parametrize("cid, backend", _params())
def test_grad_factors(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=8)
    _, grads = mod.loss_and_grad(params, x, y)
    factors = mod.grad_factors(params, x, y)
    weights = [k for k in mod.PARAM_SHAPES if k.rsplit(".", 1)[1] in WEIGHTS]
    tables = [k for k in mod.PARAM_SHAPES if k.rsplit(".", 1)[1] in TABLES]
    assert sorted(factors) == sorted(weights + tables)
    for key in tables:      # U: one 1 per row, at the row's token id (E) or step (P)
        u, v = factors[key]
        rows, size = _data_rows(spec), mod.PARAM_SHAPES[key][0]
        assert u.shape == (rows, size) and v.shape == (rows, mod.PARAM_SHAPES[key][1]), key
        assert np.array_equal(u.sum(axis=1), np.ones(rows)) and set(np.unique(u)) <= {0.0, 1.0}
        ids = x.T.reshape(-1) if key.endswith("E") else np.repeat(np.arange(size), N)
        assert np.array_equal(np.argmax(u, axis=1), ids), key
        assert rel_err(u.T @ v, grads[key]) <= 1e-12, key
    layers = {lay.name: lay for lay in spec.layers}
    for key in weights:
        u, v = factors[key]
        shape = mod.PARAM_SHAPES[key]
        n_in, n_out = shape[0], int(np.prod(shape[1:]))
        rows = _data_rows(spec)
        if len(shape) == 4:     # a conv kernel (filters, C·k·k): one row per output pixel
            rows *= int(np.prod(layers[key.split(".")[0]].out_shape[1:]))
        rows += n_in if spec.l2 else 0
        assert u.shape == (rows, n_in) and v.shape == (rows, n_out), key
        assert u.dtype == v.dtype == np.float64
        # the gradient loss_and_grad returns, truncated or not, l2 included
        assert rel_err((u.T @ v).reshape(shape), grads[key]) <= 1e-12, key
    if spec.truncate:
        _, exact = ref.exact_loss_and_grad(spec, params, x, y)
        assert any(rel_err(factors[k][0].T @ factors[k][1], exact[k]) > 1e-3
                   for k in weights)


# --------------------------------------------------------------------------
# spectrum

SPECTRUM_IDS = ["dense-relu-sce-l2", "dense-elu-mse-l2", "lstm-sce-last",
                "birnn_gru-bce-last"]


@pytest.mark.parametrize("cid, backend", _params(SPECTRUM_IDS))
def test_spectrum_lanczos_matches_eigh(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=9)
    evals = np.linalg.eigvalsh(mod.hessian(params, x, y))
    scale = np.max(np.abs(evals))
    k = 3
    res = bpgen.spectrum(mod, params, x, y, k=k, smallest=True, full=False)
    assert res["method"] == "lanczos" and "all" not in res
    assert res["largest"].shape == (k,) and res["smallest"].shape == (k,)
    assert np.max(np.abs(res["largest"] - evals[::-1][:k])) <= 1e-6 * scale
    assert np.max(np.abs(res["smallest"] - evals[:k])) <= 1e-6 * scale
    assert "smallest" not in bpgen.spectrum(mod, params, x, y, k=2, full=False)

    full = bpgen.spectrum(mod, params, x, y, k=k, smallest=True, full=True)
    assert full["method"] == "eigh"
    assert np.max(np.abs(full["all"] - evals)) <= 1e-12 * scale
    assert np.array_equal(full["largest"], full["all"][::-1][:k])
    assert np.array_equal(full["smallest"], full["all"][:k])
    assert bpgen.spectrum(mod, params, x, y)["method"] == "eigh"   # small: full


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None, "3"])
def test_spectrum_k_validation(get, bad):
    spec, mod, _ = get("dense-tanh-mse", "numpy")
    params, x, y = _point(spec, mod)
    with pytest.raises(ValueError, match=r"\bk\b"):
        bpgen.spectrum(mod, params, x, y, k=bad)
    with pytest.raises(ValueError, match=r"\bk\b"):
        bpgen.spectrum(mod, params, x, y, k=bad, full=False)


# --------------------------------------------------------------------------
# NumPy vs C; bad arguments

@pytest.mark.parametrize("cid", C_IDS)
def test_numpy_matches_c(get, cid):
    spec, mn, _ = get(cid, "numpy")
    _, mc, _ = get(cid, "c")
    params, x, y = _point(spec, mn, seed=10)
    v = mn.unflatten(np.random.default_rng(4).standard_normal(mn.N_PARAMS))
    for fn in ("hvp", "ggn_vp"):
        rn = getattr(mn, fn)(params, x, y, v)
        rc = getattr(mc, fn)(params, x, y, v)
        assert list(rn) == list(rc)
        scale = max(float(np.max(np.abs(a))) for a in rn.values())
        for key in rn:
            # a block that is zero in exact arithmetic (attention's bk: softmax
            # ignores a shift of every score of a row) holds rounding noise,
            # compared at the scale of the whole result
            assert (rel_err(rc[key], rn[key]) <= 1e-12
                    or np.max(np.abs(rc[key] - rn[key])) <= 1e-14 * scale), (fn, key)
    assert rel_err(mc.hessian(params, x, y), mn.hessian(params, x, y)) <= 1e-12


@pytest.mark.parametrize("cid, backend", _params(["dense-relu-sce-l2", "lstm-sce-last-k2"]))
@pytest.mark.parametrize("fn", ["hvp", "ggn_vp"])
def test_bad_v(get, cid, backend, fn):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod)
    call = getattr(mod, fn)
    v = {k: np.ones(s) for k, s in mod.PARAM_SHAPES.items()}
    first = next(iter(v))
    missing = dict(v)
    del missing[first]
    with pytest.raises(ValueError, match=r"^v\b.*" + re.escape(first)):
        call(params, x, y, missing)
    wrong = dict(v)
    shape = mod.PARAM_SHAPES[first]
    wrong[first] = np.ones(shape[:-1] + (shape[-1] + 1,))
    with pytest.raises(ValueError, match=r"^v\b.*shape"):
        call(params, x, y, wrong)
    extra = dict(v, **{"nope.W": np.ones(2)})
    with pytest.raises(ValueError, match=r"^v\b"):
        call(params, x, y, extra)
    with pytest.raises(ValueError, match=r"^v\b"):
        call(params, x, y, mod.flatten(v))           # a flat vector, not a dict


# --------------------------------------------------------------------------
# float32 spot check

@pytest.mark.parametrize("cid, backend", [
    pytest.param(cid, b, id=f"{b}-{cid}") for b in ("numpy", "c")
    for cid, (_, in_c) in F32_CASES.items() if b == "numpy" or in_c])
def test_float32_spot_check(get, cid, backend):
    spec, mod, _ = get(cid, backend)
    params, x, y = _point(spec, mod, seed=11)
    assert params[next(iter(params))].dtype == np.float32
    h = mod.hessian(params, x, y)
    assert h.dtype == np.float32 and np.array_equal(h, h.T)
    h_fd = ref.finite_difference_hessian(spec, params, x, y, 1e-5)
    assert rel_err(h, h_fd) <= 1e-4
    v = np.random.default_rng(5).standard_normal(mod.N_PARAMS).astype(np.float32)
    hv = mod.flatten(mod.hvp(params, x, y, mod.unflatten(v)))
    assert hv.dtype == np.float32
    assert rel_err(hv, h_fd @ v) <= 1e-4
    V = np.random.default_rng(6).standard_normal((mod.N_PARAMS, 5)).astype(np.float32)
    hm = mod.hmp(params, x, y, V)
    assert hm.dtype == np.float32 and rel_err(hm, h_fd @ V) <= 1e-4
    gv = mod.flatten(mod.ggn_vp(params, x, y, mod.unflatten(v)))
    assert gv.dtype == np.float32
    assert rel_err(gv, _fd_ggn(spec, params, x, y) @ v) <= 1e-4
    assert rel_err(mod.flatten(mod.hessian_diag(params, x, y)), np.diag(h_fd)) <= 1e-4


# --------------------------------------------------------------------------
# the command line

def _run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bpgen", "spectrum", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _floats(line):
    return np.array([float(t) for t in line.split(":", 1)[1].split()])


def test_cli_spectrum(tmp_path, cli_yaml, warm_c):
    warm_c()
    spec = load_spec(str(cli_yaml))
    mod = bpgen.build(str(cli_yaml), backend="numpy", out_dir=tmp_path / "mod")
    params = mod.init_params(0)
    rng = np.random.default_rng(12)
    params["l0.W"] = rng.standard_normal((3, 4))
    params["l0.b"] = rng.standard_normal(4)            # the rest: init_params(0)
    x, y = ref.random_batch(spec, 7, seed=12)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y, **{"l0.W": params["l0.W"], "l0.b": params["l0.b"]})
    evals = np.linalg.eigvalsh(mod.hessian(params, x, y))
    png = tmp_path / "spectrum.png"

    have_mpl = importlib.util.find_spec("matplotlib") is not None
    if not have_mpl:        # refused before any work, then the same without the plot
        proc = _run_cli(cli_yaml, "--data", data, "--partial", "-k", 3, "--png", png,
                        cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == "bpgen: error: --png: needs matplotlib (pip install matplotlib)\n"
    proc = _run_cli(cli_yaml, "--data", data, "--partial", "-k", 3, "--smallest",
                    *(("--png", png) if have_mpl else ()), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    largest = [ln for ln in lines if ln.startswith("largest 3:")]
    smallest = [ln for ln in lines if ln.startswith("smallest 3:")]
    assert len(largest) == len(smallest) == 1, proc.stdout + proc.stderr
    scale = np.max(np.abs(evals))
    assert np.max(np.abs(_floats(largest[0]) - evals[::-1][:3])) <= 1e-5 * scale
    assert np.max(np.abs(_floats(smallest[0]) - evals[:3])) <= 1e-5 * scale
    assert f"{mod.N_PARAMS} parameters" in proc.stdout
    assert f"l0.W, l0.b from {data}, l1.W, l1.b from init_params(0) (--partial)" in proc.stdout
    if have_mpl:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {png}" in proc.stdout

    # the NumPy backend, without a plot
    proc = _run_cli(cli_yaml, "--data", data, "--partial", "-k", 2, "--backend", "numpy",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("largest 2:")][0]
    assert np.max(np.abs(_floats(line) - evals[::-1][:2])) <= 1e-5 * scale

    # k is validated: one line, exit status 2, no traceback
    proc = _run_cli(cli_yaml, "--data", data, "-k", 0, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("bpgen: error:") and "-k" in proc.stderr
    assert "Traceback" not in proc.stderr
