"""bpgen/passes/hoist_independent.py on a small program: the expensive parts
of the tangent maps that do not depend on v are computed once, before them."""
import sympy as sp

from bpgen.ir import Graph
from bpgen.passes.hoist_independent import expensive, hoist_independent


def _graph():
    g = Graph()
    x = g.var("x", ("N", 3), "input")
    w = g.var("w", (3, 3), "input")
    v = g.var("v", (3, 3), "input")
    a = g.matmul(x, w)                                     # v-free
    h = g.map(sp.tanh(g.sym(a)), base="h")                 # v-free
    r = g.matmul(x, v)                                     # depends on v
    # the tangent of tanh: (1 - tanh(a)²) ⊙ r, plus a cheap v-free factor
    t = g.map((1 - sp.tanh(g.sym(a)) ** 2) * g.sym(r) + 2 * g.sym(h) * g.sym(r), base="t")
    return g, v, a, h, r, t


def test_expensive():
    z = sp.Symbol("z")
    assert expensive(sp.tanh(z)) and expensive(sp.sqrt(z)) and expensive(sp.exp(z) * z)
    assert not expensive(z ** 2 + 3 * z) and not expensive(z)


def test_hoists_the_v_free_expensive_factor_once():
    g, v, a, h, r, t = _graph()
    before = g.ops[g.producer[t]].attrs["expr"]
    dep = {v, r, t}
    made = hoist_independent(g, dep)
    assert len(made) == 1
    (hc,) = made
    hop = g.ops[g.producer[hc]]
    top = g.ops[g.producer[t]]
    # the new map computes 1 - tanh(a)², from v-free values only, before the tangent op
    assert sp.simplify(hop.attrs["expr"] - (1 - sp.tanh(sp.Symbol(a)) ** 2)) == 0
    assert not (set(hop.args) & dep)
    assert g.producer[hc] < g.producer[t] and g.producer[hc] > g.producer[a]
    # the tangent map reads it instead, and computes the same
    assert hc in top.args and not top.attrs["expr"].atoms(sp.Function)
    assert sp.simplify(top.attrs["expr"].xreplace({sp.Symbol(hc): hop.attrs["expr"]})
                       - before) == 0
    # cheap v-free parts (2·h) stay where they are; producer indices are current
    assert sp.Symbol(h) in top.attrs["expr"].free_symbols
    assert all(g.producer[op.out] == i for i, op in enumerate(g.ops))


def test_nothing_to_hoist_leaves_the_graph():
    g, v, a, h, r, t = _graph()
    ops = [(op.out, op.args) for op in g.ops]
    assert hoist_independent(g, {v, r}) == set()       # t not in the tangent part
    assert [(op.out, op.args) for op in g.ops] == ops
