"""Pass: a costly call two maps evaluate, computed once (backend-independent,
run by :func:`bpgen.lower.lower`).

SymPy differentiates a map's scalar expression, and the derivative often
repeats a call the forward map makes: gelu's a = z(1 + erf(z/√2))/2 has
the derivative (1 + erf(z/√2))/2 + z·exp(−z²/2)/√(2π), and the forward map
and the backward map each evaluated erf(z/√2) for every entry.  This pass
finds a call of a costly function (erf, exp, tanh, log, ...) that two or
more top-level maps of one program evaluate on the same variables, makes it
a map of its own, ``erf_Z = erf(√2 Z/2)``, placed before the first map
that needs it (or, when the first map that evaluates it is that call and
nothing else, as tanh's ``A = tanh(Z)``, that map's output), and substitutes that variable into every map that evaluates
it (the forward map, its derivative in the backward pass, the tangent and
second-derivative maps of ``hvp``).  The derivatives stay derived: only
the program's evaluation changes, exact to rounding.  Maps inside a
time-step loop are left alone (their temporaries are kept per step)."""
from __future__ import annotations

import dataclasses

import sympy as sp

from ..ir import Op
from ..shapes import broadcast_shape

__all__ = ["share_calls", "COSTLY"]

#: functions whose evaluation costs more than storing and reading one value
COSTLY = (sp.erf, sp.erfc, sp.exp, sp.log, sp.tanh, sp.sinh, sp.cosh, sp.sin, sp.cos,
          sp.atan)


def _calls(op) -> set:
    """The costly calls a top-level map evaluates on variables."""
    if op.prim != "map" or op.loop is not None:
        return set()
    expr = op.attrs["expr"]
    return {c for c in expr.atoms(sp.Function)
            if isinstance(c, COSTLY) and c.free_symbols
            and all(s.name in op.args for s in c.free_symbols)}


def share_calls(ops: list, g) -> list:
    """``ops`` with every costly call that two or more top-level maps
    evaluate computed once, as a map of its own (see the module).  New
    variables are added to the graph ``g`` (one per call, named after the
    function and its first argument: ``erf_l2_l1_Z``)."""
    count: dict = {}
    for op in ops:
        for c in _calls(op):
            count[c] = count.get(c, 0) + 1
    shared = {c for c, n in count.items() if n > 1}
    if not shared:
        return ops
    made = g.__dict__.setdefault("shared_calls", {})   # call -> its variable
    defined = {op.out for op in ops}
    out, placed = [], {}
    for op in ops:
        calls = sorted(_calls(op) & shared, key=sp.default_sort_key)
        expr = op.attrs["expr"] if calls else None
        if expr in shared and expr not in placed:
            placed[expr] = op.out       # the map is the call: the others read it
            out.append(op)
            continue
        for c in calls:
            if c in placed:
                continue
            args = tuple(sorted(s.name for s in c.free_symbols))
            name = made.get(c)
            if name not in g.vars or name in defined:   # (a copy of g shares the dict)
                shape = broadcast_shape([g.vars[a].shape for a in args])
                name = g.var(f"{type(c).__name__}_{args[0]}", shape)
                made[c] = name
            out.append(Op("map", name, args, {"expr": c}, op.grad_of,
                          "made once for the maps that evaluate it"))
            placed[c] = name
        if calls:
            expr = expr.xreplace({c: sp.Symbol(placed[c]) for c in calls})
            args = tuple(sorted(s.name for s in expr.free_symbols if s.name in g.vars))
            op = dataclasses.replace(op, args=args, attrs={**op.attrs, "expr": expr})
        out.append(op)
    return out
