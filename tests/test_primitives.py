"""Every primitive on its own, before any network uses it: its forward rule
(jvp) against central finite differences of its printed NumPy code, and its
reverse rule (vjp) against the forward rule by the adjoint identity
⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩.  One row per primitive (and per variant); the code
run is what the NumPy emitter prints, so printing is checked too."""
import functools
import math
import os

import numpy as np
import pytest
import sympy as sp

import bpgen.patterns
from bpgen.activations import sigmoid
from bpgen.backends.common.emitter import runtime_source
from bpgen.backends.numpy.emitter import NumpyEmitter
from bpgen.ir import Graph
from bpgen.lower import lower
from bpgen.primitives import PRIMITIVES

import bpgen.backends.numpy as numpy_backend

N = 2
NAMES = ("p", "s")
HELPERS = (runtime_source(os.path.join(os.path.dirname(numpy_backend.__file__), "runtime",
                                       "helpers.py")) + "\n" + runtime_source(bpgen.patterns.__file__))


def _compile(prog):
    """The NumPy function the emitter prints for ``prog``."""
    lines = [line for b in NumpyEmitter(prog, "float64").blocks() for line in b["lines"]]
    src = (f"def f({', '.join(prog.inputs)}):\n    N = {N}\n"
           + "".join(f"    {line}\n" for line in lines)
           + f"    return [{', '.join(prog.outputs)}]\n")
    ns = {"numpy": np, "math": math, "functools": functools, "DTYPE": np.dtype("float64")}
    exec(HELPERS, ns)
    exec(src, ns)
    return ns["f"]


def _shape(shape):
    return tuple(d if isinstance(d, int) else N * int(d.split("*")[0]) if "*" in d else N
                 for d in shape)


# id -> (input shapes, build(g, *inputs) -> output)
CASES = {
    "matmul-nn": ([(3, 4), (4, 2)], lambda g, a, b: g.matmul(a, b)),
    "matmul-tn": ([(4, 3), (4, 2)], lambda g, a, b: g.matmul(a, b, ta=True)),
    "matmul-nt": ([(3, 4), (2, 4)], lambda g, a, b: g.matmul(a, b, tb=True)),
    "matmul-tt": ([(4, 3), (2, 4)], lambda g, a, b: g.matmul(a, b, ta=True, tb=True)),
    "map-broadcast-row": ([(3, 4), (1, 4)],
                          lambda g, a, b: g.map(sp.tanh(g.sym(a)) * g.sym(b) + g.sym(a) ** 2)),
    "map-broadcast-col": ([(3, 4), (3, 1)],
                          lambda g, a, b: g.map(sigmoid(g.sym(a) - g.sym(b))
                                                / (1 + g.sym(b) ** 2))),
    "map-scalar": ([(3, 4), (1, 1)], lambda g, a, b: g.map(sp.exp(g.sym(a) * g.sym(b)))),
    "sum-cols": ([(3, 4)], lambda g, a: g.sum(a, 0)),
    "sum-rows": ([(3, 4)], lambda g, a: g.sum(a, 1)),
    "sum-all": ([(3, 4)], lambda g, a: g.sum(a, None)),
    "cols": ([(3, 5)], lambda g, a: g.cols(a, 1, 3)),
    "place_cols": ([(3, 2)], lambda g, a: g.place_cols(a, 2, 6)),
    "concat": ([(3, 2), (3, 3)], lambda g, a, b: g.concat([a, b])),
    "rows": ([("3*N", 2)], lambda g, a: g.rows(a, 1)),
    "place_rows": ([("N", 2)], lambda g, a: g.place_rows(a, 2, 3)),
    "gather-im2col": ([("N", 2 * 4 * 5)],
                      lambda g, a: g.gather(a, ("im2col", 2, 4, 5, 3, 2, 1), 6, 18)),
    "gather-windows": ([("N", 2 * 4 * 5)],
                       lambda g, a: g.gather(a, ("windows", 2, 4, 5, 3, 1), 12, 9)),
    "gather-transpose": ([("6*N", 3)], lambda g, a: g.gather(a, ("transpose", 6, 3), 1, 18)),
    "scatter-im2col": ([("6*N", 18)],
                       lambda g, a: g.scatter(a, ("im2col", 2, 4, 5, 3, 2, 1), ("N", 40))),
    "take_argmax": ([(5, 4)], lambda g, a: g.take_argmax(a, a)),
    # the selector carries no derivative (argmax is piecewise constant)
    "put_argmax": ([(5, 4), (5, 1)], lambda g, a, b: g.put_argmax(a, b), (0,)),
    # an integer index (the token ids): no derivative, values in [0, 7)
    "take_rows-index": ([(7, 3), ("2*N", 1)], lambda g, a, x: g.take_rows(a, x), (1,), {1: 7}),
    "take_rows-steps": ([(3, 4)], lambda g, a: g.take_rows(a, None, steps=3)),
    "add_rows-index": ([("2*N", 3), ("2*N", 1)], lambda g, a, x: g.add_rows(a, x, 7), (1,),
                       {1: 7}),
    "add_rows-steps": ([("3*N", 4)], lambda g, a: g.add_rows(a, None, 3)),
    "seqmm-qk": ([("3*N", 4), ("3*N", 4)], lambda g, a, b: g.seqmm(a, b, "qk", 3, 2)),
    "seqmm-av": ([("6*N", 3), ("3*N", 4)], lambda g, a, b: g.seqmm(a, b, "av", 3, 2)),
    "seqmm-atv": ([("6*N", 3), ("3*N", 4)], lambda g, a, b: g.seqmm(a, b, "atv", 3, 2)),
    # fill 0 here, to difference it (fill -inf: test_causal_mask_fills_minus_infinity)
    "causal_mask": ([("6*N", 3)], lambda g, a: g.causal_mask(a, 3, "0")),
    # max pooling in one pass: the windows (overlapping; not tiling the maps) read in place
    "take_argmax-windows": ([("N", 2 * 4 * 5)],
                            lambda g, a: g.take_argmax(a, a, pattern=("windows", 2, 4, 5, 3, 1))),
    "put_argmax-windows": ([("N", 2 * 4 * 5), ("8*N", 1)],
                           lambda g, a, b: g.put_argmax(a, b, pattern=("windows", 2, 4, 5, 2, 2)),
                           (0,)),
    # with the key-padding mask (0/1 values, no derivative), causal or not
    "causal_mask-keys": ([("6*N", 3), ("3*N", 1)],
                         lambda g, a, m: g.causal_mask(a, 3, "0", keys=m), (1,), {1: 2}),
    "causal_mask-keys-only": ([("6*N", 3), ("3*N", 1)],
                              lambda g, a, m: g.causal_mask(a, 3, "0", keys=m, causal=False),
                              (1,), {1: 2}),
}


def test_every_primitive_is_covered():
    tested = {cid.split("-")[0] for cid in CASES}
    # rowmax carries no gradient (tested below); prev and cut only exist in
    # loops and are checked through the recurrent networks
    assert tested | {"rowmax", "prev", "cut"} == set(PRIMITIVES)


@pytest.mark.parametrize("cid", list(CASES))
def test_primitive_rules(cid):
    shapes, build, *const = CASES[cid]
    const, ints = (tuple(const) + ((), {}))[:2]
    g = Graph()
    ins = [g.var(NAMES[i], s, "input", differentiable=i not in ints)
           for i, s in enumerate(shapes)]
    out = build(g, *ins)
    op = g.ops[g.producer[out]]
    assert op.prim == cid.split("-")[0]
    prim = PRIMITIVES[op.prim]
    n_fwd = len(g.ops)
    u = g.var("u", g.vars[out].shape, "input")
    tans = {a: g.var(f"t_{a}", g.vars[a].shape, "input") for a in ins}
    cots = prim.vjp(g, op, u)
    tangent = prim.jvp(g, op, tans)
    assert set(cots) == {a for i, a in enumerate(ins) if i not in const}
    assert tangent is not None
    inputs = ins + [u] + list(tans.values())
    f_out = _compile(lower(g, "f", ins, [out], n_fwd))
    diff = [a for a in ins if a in cots]
    f_rules = _compile(lower(g, "rules", inputs, [cots[a] for a in diff] + [tangent], n_fwd))

    rng = np.random.default_rng(0)
    vals = [rng.integers(0, ints[i], size=_shape(g.vars[a].shape)) if i in ints
            else rng.normal(size=_shape(g.vars[a].shape)) for i, a in enumerate(ins)]
    uv = rng.normal(size=_shape(g.vars[u].shape))
    tv = [np.zeros(v.shape, dtype=v.dtype) if i in ints else rng.normal(size=v.shape)
          for i, v in enumerate(vals)]
    *cv, jt = f_rules(*vals, uv, *tv)
    # the adjoint identity: <u, J t> = <J^T u, t>
    lhs = float(np.sum(uv * jt))
    tv_diff = [t for a, t in zip(ins, tv) if a in cots]
    rhs = sum(float(np.sum(np.broadcast_to(c, t.shape) * t)) for c, t in zip(cv, tv_diff))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    for c, t in zip(cv, tv_diff):
        assert np.shape(c) == t.shape
    # the forward rule against central finite differences
    eps = 1e-6
    plus = f_out(*[v if i in ints else v + eps * t for i, (v, t) in enumerate(zip(vals, tv))])[0]
    minus = f_out(*[v if i in ints else v - eps * t
                    for i, (v, t) in enumerate(zip(vals, tv))])[0]
    fd = (plus - minus) / (2 * eps)
    assert np.max(np.abs(fd - jt)) <= 1e-7 * max(1.0, np.max(np.abs(jt)))


def test_rowmax_carries_no_derivative():
    g = Graph()
    a = g.var("a", (3, 4), "input", differentiable=True)
    m = g.rowmax(a)
    op = g.ops[g.producer[m]]
    assert not g.vars[m].differentiable
    assert PRIMITIVES["rowmax"].vjp(g, op, "u") == {}
    assert PRIMITIVES["rowmax"].jvp(g, op, {a: "t"}) is None


def test_every_primitive_prints_an_equation_in_text_and_latex():
    for cid, (shapes, build, *rest) in CASES.items():
        ints = rest[1] if len(rest) > 1 else {}
        g = Graph()
        ins = [g.var(NAMES[i], s, "input", differentiable=i not in ints)
               for i, s in enumerate(shapes)]
        op = g.ops[g.producer[build(g, *ins)]]
        for latex in (False, True):
            text = PRIMITIVES[op.prim].equation(op, {}, latex)
            assert text and all(a in text for a in op.args), (cid, text)


def test_causal_mask_fills_minus_infinity():
    """The forward mask: -inf exactly at keys after the query (s > t), the
    scores elsewhere, in the (head, step, sample) row order of seqmm's qk."""
    g = Graph()
    a = g.var("p", ("6*N", 3), "input", differentiable=True)
    out = g.causal_mask(a, 3)
    f = _compile(lower(g, "f", [a], [out], len(g.ops)))
    s = np.random.default_rng(0).normal(size=(6 * N, 3))
    got = f(s)[0].reshape(2, 3, N, 3)
    t, k = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    want = np.where((k > t)[None, :, None, :], -np.inf, s.reshape(2, 3, N, 3))
    np.testing.assert_array_equal(got, want)


def test_key_mask_fills_minus_infinity():
    """The key-padding mask: -inf exactly at keys s with M[s·N + n] = 0 (and
    after the query when causal) in row (j·T + t)·N + n, the scores elsewhere."""
    lengths = np.array([3, 1])[:N]
    m = (np.arange(3)[:, None] < lengths[None, :]).astype(float).reshape(-1, 1)
    s = np.random.default_rng(1).normal(size=(6 * N, 3))
    t, k = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    for causal in (True, False):
        g = Graph()
        a = g.var("p", ("6*N", 3), "input", differentiable=True)
        keys = g.var("s", ("3*N", 1), "input")
        out = g.causal_mask(a, 3, keys=keys, causal=causal)
        got = _compile(lower(g, "f", [a, keys], [out], len(g.ops)))(s, m)[0]
        pad = np.arange(3)[None, :] >= lengths[:, None]               # (n, s)
        masked = pad[None, None, :, :] | ((k > t)[None, :, None, :] & causal)
        want = np.where(masked, -np.inf, s.reshape(2, 3, N, 3))
        np.testing.assert_array_equal(got.reshape(2, 3, N, 3), want)
