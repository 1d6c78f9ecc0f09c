"""Hoisting what does not depend on the directions out of the tangent part
of ``hessian_columns`` (see :func:`bpgen.derivation._hessian_columns`).

The tangent part runs once per direction (or per chunk of directions); an
expensive subexpression of one of its maps that does not depend on v
(tanh(C), the product of the v-free factors of a product, ...) would be
computed as many times.  :func:`hoist_independent` makes each such
subexpression a map of its own, placed among the ops that do not depend on
v, so that it is computed once, over whole sequences."""
from __future__ import annotations

import sympy as sp

from ..ir import Graph

__all__ = ["hoist_independent", "expensive"]


def expensive(expr) -> bool:
    """A function call (tanh, exp, σ, ...) or a non-integer power: worth
    computing once rather than once per direction."""
    return bool(expr.atoms(sp.Function)) or any(not p.exp.is_integer
                                                for p in expr.atoms(sp.Pow))


def hoist_independent(g: Graph, dep: set) -> set:
    """Move what the ops of ``g`` whose outputs are in ``dep`` (those that
    depend on v) recompute for every direction out of them: in each of
    their maps, every expensive subexpression that does not depend on v
    becomes a map of its own (not in ``dep``), placed after the ops that
    define its arguments (and after any loop's run of ops it would split).
    ``g`` is changed in place.  Returns the new variables (which lowering
    must not inline back)."""
    dep_syms = {sp.Symbol(v) for v in dep}
    made: dict = {}          # expression -> its variable (None: not hoistable)
    inserts = []             # (position, op) among the ops independent of v

    def free(e):
        return not (e.free_symbols & dep_syms)

    def var_for(e):
        # elementwise: computed over whole sequences after the loops that
        # define its arguments (the tangent loops run after all of them)
        args = [s.name for s in e.free_symbols if s.name in g.vars]
        if e not in made:
            before = len(g.ops)
            try:
                name = g.map(e, base="hc")
            except ValueError:       # whole sequences and per-sample rows: left in place
                made[e] = None
                return e
            if len(g.ops) > before:              # a new op (not just a symbol)
                new_op = g.ops.pop()
                pos = max([g.producer[a] + 1 for a in args if a in g.producer] or [0])
                while (0 < pos < len(g.ops) and g.ops[pos - 1].loop is not None
                       and g.ops[pos].loop == g.ops[pos - 1].loop):
                    pos += 1             # not inside a loop's run of ops
                inserts.append((pos, new_op))
            made[e] = name
        return e if made[e] is None else sp.Symbol(made[e])

    def hoist(e):
        if free(e):
            return var_for(e) if expensive(e) and not e.is_Symbol else e
        if e.is_Add or e.is_Mul:
            indep = [a for a in e.args if free(a)]
            rest = [hoist(a) for a in e.args if not free(a)]
            if indep and expensive(e.func(*indep)):
                return e.func(var_for(e.func(*indep)), *rest)
            return e.func(*indep, *rest)
        if not e.args:
            return e
        return e.func(*[hoist(a) for a in e.args])

    for op in g.ops:
        if op.out in dep and op.primitive.elementwise:
            expr = hoist(op.attrs["expr"])
            if expr != op.attrs["expr"]:
                op.attrs = {**op.attrs, "expr": expr}
                op.args = tuple(sorted(s.name for s in expr.free_symbols if s.name in g.vars))
    for pos, new_op in sorted(inserts, key=lambda x: -x[0]):
        g.ops.insert(pos, new_op)
    g.producer = {op.out: i for i, op in enumerate(g.ops)}
    return {op.out for _, op in inserts}
