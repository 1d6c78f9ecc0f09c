"""Generated recurrent networks (rnn, lstm, gru, birnn; sequence losses;
truncated BPTT) in both backends, against the reference, against central
finite differences, and NumPy against C.

C builds dominate the running time (a few seconds each, most for a birnn of
lstm or gru cells), so the NumPy
backend runs the whole product cell x steps x truncation x dtype, and the C
backend a covering subset of it: every (steps, truncation, dtype) combination
and every (loss, steps) pair in C with some cell; every cell but the two
dearest in C with both values of steps, truncation and dtype; birnn(gru) in
C once, and birnn(lstm) in C inside a truncated stack (test_stacked_truncated).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.codegen import generate
from bpgen.check import TOLERANCES, fd_grad, rel_err, sample_point
from bpgen.spec import LOSSES, RECURRENT_TYPES, load_spec

from conftest import ROOT

N, T, F = 3, 5, 3
K_OUT = 3           # units of the dense head
TRUNC = 2

# id -> the recurrent layer (without units); hidden units vary between 2 and 3
CELLS = {
    "rnn_tanh": {"type": "rnn"},
    "rnn_relu": {"type": "rnn", "activation": "relu"},
    "rnn_sigmoid": {"type": "rnn", "activation": "sigmoid"},
    "lstm": {"type": "lstm"},
    "gru": {"type": "gru"},
    "birnn_rnn": {"type": "birnn", "cell": "rnn"},
    "birnn_lstm": {"type": "birnn", "cell": "lstm"},
    "birnn_gru": {"type": "birnn", "cell": "gru"},
}
COMBOS = [(steps, k, dtype) for steps in ("all", "last") for k in (None, TRUNC)
          for dtype in ("float64", "float32")]


def seq_arch(name, layers, loss="mse", steps="all", truncate=None, dtype="float64",
             t=T, f=F, l2=0.0):
    arch = {"name": name, "dtype": dtype, "input": {"features": f, "steps": t},
            "layers": layers, "loss": {"type": loss, "steps": steps}}
    if truncate is not None:
        arch["bptt"] = {"truncate": truncate}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


# the combos (indices into COMBOS) built in C: a combo and its complement,
# rotating over the cells; the two dearest cells (a C build of a birnn of lstm
# or gru cells takes 15-25 s of CPU) get one or none: birnn(lstm) is built in
# C in a stack instead (STACK_B_TRUNCATED)
C_COMBOS = {cell: (i % 4, 7 - i % 4) for i, cell in enumerate(CELLS)}
C_COMBOS["birnn_lstm"] = ()
C_COMBOS["birnn_gru"] = (COMBOS.index(("last", TRUNC, "float64")),)


def _case(ci, cell_id, j, combo):
    steps, k, dtype = combo
    loss = LOSSES[(ci // 2 + j) % len(LOSSES)]  # every cell meets every loss
    units = 2 + (ci + j) % 2
    layers = [{**CELLS[cell_id], "units": units}, {"type": "dense", "units": K_OUT}]
    name = f"r_{cell_id}_{steps}_{k or 0}_{dtype[-2:]}"
    in_c = j in C_COMBOS[cell_id]
    return {"id": f"{cell_id}-{steps}-k{k}-{dtype}-{loss[:3]}", "cell": cell_id,
            "steps": steps, "truncate": k, "dtype": dtype, "loss": loss,
            "arch": seq_arch(name, layers, loss, steps, k, dtype,
                             l2=0.02 if j % 3 == 0 else 0.0),
            "in_c": in_c}


CASES = [_case(ci, cell_id, j, combo) for ci, cell_id in enumerate(CELLS)
         for j, combo in enumerate(COMBOS)]
C_CASES = [c for c in CASES if c["in_c"]]

# the covering properties the module docstring promises
assert {(c["cell"], c["loss"]) for c in CASES} == {(c, l) for c in CELLS for l in LOSSES}
for _cell in CELLS:
    _mine = [c for c in C_CASES if c["cell"] == _cell]
    if len(_mine) < 2:
        continue
    assert {c["steps"] for c in _mine} == {"all", "last"}
    assert {c["truncate"] for c in _mine} == {None, TRUNC}
    assert {c["dtype"] for c in _mine} == {"float64", "float32"}
assert {(c["steps"], c["truncate"], c["dtype"]) for c in C_CASES} == set(COMBOS)
assert {(c["loss"], c["steps"]) for c in C_CASES} == {(l, s) for l in LOSSES
                                                      for s in ("all", "last")}


def _params(case_list, backends=("numpy", "c")):
    out = []
    for backend in backends:
        for c in case_list:
            if backend == "c" and not c["in_c"]:
                continue
            out.append(pytest.param(c, backend, id=f"{backend}-{c['id']}"))
    return out


def _out_shape(spec, n):
    return (n,) + tuple(spec.output_shape)


def _recurrent_keys(spec):
    return [f"{lay.name}.{p}" for lay in spec.layers if lay.type in RECURRENT_TYPES
            for p in (par.name for par in lay.params)]


def _check_against_reference(spec, mod, params, x, y, tol):
    """forward, loss, loss_and_grad of mod against the reference; returns grads."""
    n = x.shape[0]
    out = mod.forward(params, x)
    assert out.dtype == np.dtype(spec.dtype) and out.flags.c_contiguous
    assert out.shape == _out_shape(spec, n)
    assert rel_err(out, ref.forward(spec, params, x)) <= tol

    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    assert isinstance(value, float)
    assert abs(value - ref_value) <= tol * max(1.0, abs(ref_value))
    plain = mod.loss(params, x, y)
    assert isinstance(plain, float)
    assert abs(plain - ref_value) <= tol * max(1.0, abs(ref_value))
    assert list(grads) == list(mod.PARAM_SHAPES) == list(spec.param_shapes)
    for key, g in grads.items():
        assert g.shape == mod.PARAM_SHAPES[key]
        assert g.dtype == np.dtype(spec.dtype) and g.flags.c_contiguous
        assert rel_err(g, ref_grads[key]) <= tol, key
    return grads


# --------------------------------------------------------------------------
# every cell x steps x truncation x dtype

@pytest.mark.parametrize("case, backend", _params(CASES))
def test_against_reference_and_fd(builder, case, backend):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=3)
    ref_tol, fd_tol = TOLERANCES[case["dtype"]]
    grads = _check_against_reference(spec, mod, params, x, y, ref_tol)

    if case["truncate"] is None:
        # the exact gradient is the loss's derivative
        fd = fd_grad(spec, mod, params, x, y)
        for key, g in grads.items():
            assert rel_err(g, fd[key]) <= fd_tol, key
    else:
        # truncation (k < T) really changes the recurrent layer's gradient ...
        assert case["truncate"] < T
        _, exact = ref.loss_and_grad(spec, params, x, y, truncate=None)
        assert max(rel_err(grads[k], exact[k]) for k in _recurrent_keys(spec)) > 1e-3
        # ... and finite differences check the exact gradient of the same point
        fd = fd_grad(spec, mod, params, x, y)
        for key in exact:
            assert rel_err(exact[key], fd[key]) <= 1e-5, key


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in C_CASES])
def test_numpy_matches_c(builder, case):
    spec = load_spec(case["arch"])
    mn, mc = builder(case["arch"], "numpy"), builder(case["arch"], "c")
    params, x, y = sample_point(spec, mn, batch=N, seed=5)
    tol = 1e-12 if case["dtype"] == "float64" else 1e-5
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    vn, gn = mn.loss_and_grad(params, x, y)
    vc, gc = mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    assert abs(mn.loss(params, x, y) - mc.loss(params, x, y)) <= tol * max(1.0, abs(vn))
    assert list(gn) == list(gc)
    for key in gn:
        assert rel_err(gc[key], gn[key]) <= tol, key


# --------------------------------------------------------------------------
# truncation

def _untruncated(arch):
    """The same architecture without bptt."""
    twin = {k: v for k, v in arch.items() if k != "bptt"}
    twin["name"] = arch["name"] + "_exact"    # as bpgen check names it
    return twin


TRUNCATED = [c for c in CASES if c["truncate"]]
C_TWINS = ("rnn_tanh",)                 # C builds are dear: one cell in C


@pytest.mark.parametrize("case, backend", _params(TRUNCATED, ("numpy",)) + [
    pytest.param(c, "c", id=f"c-{c['id']}") for c in TRUNCATED
    if c["in_c"] and c["cell"] in C_TWINS])
def test_truncation_changes_loss_and_grad_only(builder, case, backend):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    exact = builder(_untruncated(case["arch"]), backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=8)
    assert np.array_equal(mod.forward(params, x), exact.forward(params, x))
    assert mod.loss(params, x, y) == exact.loss(params, x, y)
    value, grads = mod.loss_and_grad(params, x, y)
    value_exact, grads_exact = exact.loss_and_grad(params, x, y)
    assert value == value_exact
    tol = TOLERANCES[case["dtype"]][0]
    _, ref_exact = ref.loss_and_grad(spec, params, x, y, truncate=None)
    for key in grads:
        assert rel_err(grads_exact[key], ref_exact[key]) <= tol, key
    assert max(rel_err(grads[k], grads_exact[k]) for k in _recurrent_keys(spec)) > 1e-3
    # hvp (and so the Hessian) stays that of the exact loss
    v = sample_point(spec, mod, batch=N, seed=9)[0]
    hv, hv_exact = mod.hvp(params, x, y, v), exact.hvp(params, x, y, v)
    for key in hv:
        assert rel_err(hv[key], hv_exact[key]) <= 1e-12, key


def _at_least_T_arch(cell_id, k):
    return seq_arch(f"k_{cell_id}_{k}", [{**CELLS[cell_id], "units": 3},
                                         {"type": "dense", "units": 2}],
                    "mse", "all", truncate=k)


LONG_TRUNC = [(cell, k) for cell in CELLS for k in (T, T + 3)]


@pytest.mark.parametrize("cell_id, k, backend", [
    *[pytest.param(c, k, "numpy", id=f"numpy-{c}-k{k}") for c, k in LONG_TRUNC],
    pytest.param("birnn_rnn", T, "c", id=f"c-birnn_rnn-k{T}")])  # C builds are dear
def test_truncate_at_least_T_is_exact(builder, backend, cell_id, k):
    arch = _at_least_T_arch(cell_id, k)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=4)
    value, grads = mod.loss_and_grad(params, x, y)
    ref_value, exact = ref.loss_and_grad(spec, params, x, y, truncate=None)
    assert value == pytest.approx(ref_value, rel=1e-12)
    fd = fd_grad(spec, mod, params, x, y)
    for key in grads:
        assert rel_err(grads[key], exact[key]) <= 1e-8, key
        assert rel_err(grads[key], fd[key]) <= 1e-5, key


# --------------------------------------------------------------------------
# stacked recurrent layers, and dense layers on a sequence

STACKS = {
    "lstm_gru_dense": seq_arch(
        "stack_a",
        [{"type": "lstm", "units": 3, "name": "enc"},
         {"type": "gru", "units": 2, "name": "dec"},
         {"type": "dense", "units": 3, "name": "head"}],
        "softmax_cross_entropy", "all"),
    "gru_birnn_dense_dense": seq_arch(
        "stack_b",
        [{"type": "gru", "units": 3, "name": "g"},
         {"type": "birnn", "cell": "lstm", "units": 2, "name": "bi"},
         {"type": "dense", "units": 4, "activation": "relu"},
         {"type": "dense", "units": 2, "name": "out"}],
        "sigmoid_binary_cross_entropy", "last", l2=0.01),
}
STACK_KEYS = {
    "lstm_gru_dense": ["enc.Wx", "enc.Wh", "enc.b", "dec.Wx", "dec.Wh", "dec.bx",
                       "dec.bh", "head.W", "head.b"],
    "gru_birnn_dense_dense": ["g.Wx", "g.Wh", "g.bx", "g.bh",
                              "bi.fwd.Wx", "bi.fwd.Wh", "bi.fwd.b",
                              "bi.bwd.Wx", "bi.bwd.Wh", "bi.bwd.b",
                              "l2.W", "l2.b", "out.W", "out.b"],
}


STACK_B_TRUNCATED = dict(STACKS["gru_birnn_dense_dense"], name="stack_b_k",
                         loss={"type": "sigmoid_binary_cross_entropy", "steps": "all"},
                         bptt={"truncate": TRUNC})


@pytest.mark.parametrize("stack, backend", [
    ("lstm_gru_dense", "numpy"), ("lstm_gru_dense", "c"),
    ("gru_birnn_dense_dense", "numpy")])    # in C with truncation only, below
def test_stacked_recurrent_layers(builder, backend, stack):
    arch = STACKS[stack]
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert list(mod.PARAM_SHAPES) == STACK_KEYS[stack]
    assert dict(mod.PARAM_SHAPES) == spec.param_shapes
    params, x, y = sample_point(spec, mod, batch=N, seed=6)
    grads = _check_against_reference(spec, mod, params, x, y, 1e-8)
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert rel_err(g, fd[key]) <= 1e-5, key
    if backend == "c":
        _check_numpy_matches_c(builder, arch, params, x, y)


def _check_numpy_matches_c(builder, arch, params, x, y, tol=1e-12):
    mn, mc = builder(arch, "numpy"), builder(arch, "c")
    assert rel_err(mc.forward(params, x), mn.forward(params, x)) <= tol
    vn, gn = mn.loss_and_grad(params, x, y)
    vc, gc = mc.loss_and_grad(params, x, y)
    assert abs(vn - vc) <= tol * max(1.0, abs(vn))
    for key in gn:
        assert rel_err(gc[key], gn[key]) <= tol, key


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_stacked_truncated(builder, backend):
    """Truncation through three recurrent cells of a stack (gru, then a birnn
    whose backward half counts from the last step)."""
    arch = STACK_B_TRUNCATED
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert list(mod.PARAM_SHAPES) == STACK_KEYS["gru_birnn_dense_dense"]
    params, x, y = sample_point(spec, mod, batch=N, seed=6)
    grads = _check_against_reference(spec, mod, params, x, y, 1e-8)
    _, exact = ref.loss_and_grad(spec, params, x, y, truncate=None)
    for prefix in ("g.", "bi.fwd.", "bi.bwd."):
        assert max(rel_err(grads[k], exact[k]) for k in grads
                   if k.startswith(prefix)) > 1e-3, prefix
    for key in ("l2.W", "l2.b", "out.W", "out.b"):      # above the recurrence
        assert rel_err(grads[key], exact[key]) <= 1e-8, key
    if backend == "c":
        _check_numpy_matches_c(builder, arch, params, x, y)


DENSE_SEQ = [("all", "softmax_cross_entropy"), ("last", "mse")]


def _dense_seq_arch(steps, loss):
    return seq_arch(f"dseq_{steps}", [{"type": "dense", "units": 4, "activation": "tanh"},
                                      {"type": "dense", "units": 3}], loss, steps)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("steps, loss", DENSE_SEQ)
def test_dense_on_sequence_without_recurrent_layer(builder, backend, steps, loss):
    arch = _dense_seq_arch(steps, loss)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    assert mod.PARAM_SHAPES == {"l0.W": (F, 4), "l0.b": (4,), "l1.W": (4, 3),
                                "l1.b": (3,)}
    params, x, y = sample_point(spec, mod, batch=N, seed=2)
    out = mod.forward(params, x)
    assert out.shape == (N, T, 3)
    # the same dense layers applied to every step separately
    for t in range(T):
        h = np.tanh(x[:, t] @ params["l0.W"] + params["l0.b"])
        assert rel_err(out[:, t], h @ params["l1.W"] + params["l1.b"]) <= 1e-12
    grads = _check_against_reference(spec, mod, params, x, y, 1e-8)
    fd = fd_grad(spec, mod, params, x, y)
    for key, g in grads.items():
        assert rel_err(g, fd[key]) <= 1e-5, key


# --------------------------------------------------------------------------
# shapes, batch of 1, argument checking

def _first_c_case(**want):
    for c in C_CASES:
        if all(c[k] == v for k, v in want.items()):
            return c
    raise LookupError(want)


SHAPE_CASES = [_first_c_case(loss=loss, steps=steps)
               for loss in LOSSES for steps in ("all", "last")]


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in SHAPE_CASES])
def test_batch_of_one(builder, backend, case):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=1, seed=12)
    assert x.shape == (1, T, F)
    _check_against_reference(spec, mod, params, x, y, TOLERANCES[case["dtype"]][0])


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in SHAPE_CASES])
def test_shapes_and_argument_errors(builder, backend, case):
    spec = load_spec(case["arch"])
    mod = builder(case["arch"], backend)
    params, x, y = sample_point(spec, mod, batch=N, seed=1)
    dtype = np.dtype(case["dtype"])
    out = mod.forward(params, x)
    assert out.shape == (N, T, K_OUT) and out.dtype == dtype and out.flags.c_contiguous

    last = case["steps"] == "last"
    labels = case["loss"] == "softmax_cross_entropy"
    lead = (N,) if last else (N, T)
    assert y.shape == (lead if labels else lead + (K_OUT,))
    mod.loss_and_grad(params, x, y)

    # y of the other steps mode, or otherwise misshapen
    if labels:
        bad_ys = [np.zeros((N, T) if last else (N,), dtype=np.int64),
                  np.zeros(lead + (K_OUT,), dtype=np.int64),
                  np.zeros((N + 1,) + lead[1:], dtype=np.int64)]
    else:
        bad_ys = [np.zeros(((N, T) if last else (N,)) + (K_OUT,), dtype=dtype),
                  np.zeros(lead, dtype=dtype),
                  np.zeros(lead + (K_OUT + 1,), dtype=dtype),
                  np.zeros((N + 1,) + lead[1:] + (K_OUT,), dtype=dtype)]
    for bad in bad_ys:
        for fn in (mod.loss, mod.loss_and_grad):
            with pytest.raises(ValueError, match=r"^y\b"):
                fn(params, x, bad)

    bad_xs = [x[:, 0, :],                            # no step axis
              x[:, :T - 1, :],                       # too few steps
              np.concatenate([x, x[:, :1]], axis=1),  # too many steps
              x[:, :, :F - 1],                       # wrong features
              x[0]]                                  # no batch axis
    for bad in bad_xs:
        with pytest.raises(ValueError, match=r"^x\b"):
            mod.forward(params, bad)
        with pytest.raises(ValueError, match=r"^x\b"):
            mod.loss_and_grad(params, bad, y)

    # inputs in another layout are accepted and left unmodified
    xf = np.asfortranarray(x)
    x_copy = xf.copy()
    assert rel_err(mod.forward(params, xf), out) == 0.0
    assert np.array_equal(xf, x_copy)


# --------------------------------------------------------------------------
# long sequences: the code loops over steps, it does not unroll them

def _lstm_long(t):
    return seq_arch(f"long_{t}", [{"type": "lstm", "units": 4},
                                  {"type": "dense", "units": 1}],
                    "mse", "last", f=2, t=t)


def _sources(mod):
    """{file name: text} of the generated sources next to ``mod``."""
    d = os.path.dirname(mod.__file__)
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith((".py", ".c")):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                out[f] = fh.read()
    return out


def _skeleton(text):
    """The text with hashes and then every number (1,536 with its thousands
    separators: a cost in a comment) replaced by '#': what is left does not
    depend on T."""
    return re.sub(r"\d+(,\d{3})*", "#", re.sub(r"[0-9a-f]{12,}", "H", text))


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_long_sequence(builder, backend):
    arch = _lstm_long(1000)
    spec = load_spec(arch)
    mod = builder(arch, backend)
    params, x, y = sample_point(spec, mod, batch=2, seed=7)
    assert x.shape == (2, 1000, 2)
    _check_against_reference(spec, mod, params, x, y, 1e-8)

    # the sources for T = 10 (generated only: no need to compile them)
    small = generate(load_spec(_lstm_long(10)), backend).files
    big = _sources(mod)
    assert [f.replace("1000", "10") for f in big] == sorted(small)
    for (fb, tb), (fs, ts) in zip(big.items(), sorted(small.items())):
        # the same code: only the digits of T (and of sizes made from it) differ
        assert abs(len(_skeleton(tb)) - len(_skeleton(ts))) <= 8, (fb, fs)
        assert len(tb) <= 1.02 * len(ts), (fb, len(tb), fs, len(ts))


# --------------------------------------------------------------------------
# the command line

# The generated code names the file it came from (its base name only), so a
# fixed file name lets warm runs find both modules bpgen check builds (and the
# untruncated twin it builds for the fd columns) in the compile cache.
CHECK_FILE = "check_rnn.yaml"
CHECK_YAML = """\
name: check_rnn
input: {features: 3, steps: 4}
layers:
  - {type: rnn, units: 3, activation: tanh, name: enc}
  - {type: dense, units: 2}
loss: {type: softmax_cross_entropy, steps: last}
bptt: {truncate: 2}
"""


def test_cli_check(tmp_path):
    path = tmp_path / CHECK_FILE
    path.write_text(CHECK_YAML, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "bpgen", "check", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
    assert "enc.Wh" in proc.stdout and "bptt truncate 2" in proc.stdout


# --------------------------------------------------------------------------
# compiling the C modules in the background

def _c_archs():
    """Every architecture this file builds in C, in the order the tests use them."""
    archs = [c["arch"] for c in C_CASES]
    archs += [_untruncated(c["arch"]) for c in TRUNCATED
              if c["in_c"] and c["cell"] in C_TWINS]
    archs.append(_at_least_T_arch("birnn_rnn", T))
    archs += [STACKS["lstm_gru_dense"], STACK_B_TRUNCATED]
    archs += [_dense_seq_arch(steps, loss) for steps, loss in DENSE_SEQ]
    archs.append(_lstm_long(1000))
    return archs


