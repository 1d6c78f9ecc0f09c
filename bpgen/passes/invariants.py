"""Pass (NumPy): loop-invariant factors of elementwise maps, hoisted.

Inside a loop, the parts of a map's expression that do not change from
step to step (functions of values computed before the loop) are computed
once before the loop, for all steps at once, each into a variable of its
own (``fac``, ``fac_1``, ...; a function call on its own first, so that a
shared one is computed once).  The map then reads those variables.  The
result is plain data (:class:`Hoisted` values and the rewritten maps) that
the NumPy emitter prints.  (The C backend computes every map element by
element inside its loop and has no use for this.)"""
from __future__ import annotations

import dataclasses

import sympy as sp

from ..ir import Var
from ..shapes import broadcast_shape

__all__ = ["Hoisted", "hoist_invariants"]


@dataclasses.dataclass(frozen=True)
class Hoisted:
    """Before loop ``loop``: ``name`` = the elementwise ``expr`` of the
    arrays ``args``, every step at once (shape ``shape``)."""
    loop: int
    name: str
    expr: sp.Basic
    args: tuple
    shape: tuple


def hoist_invariants(prog, fresh, varying=frozenset()) -> tuple:
    """({op out: the map reading hoisted values}, {op out: [Hoisted made for
    it, in order]}, {new name: Var}); ``varying``: names that may not move
    before a loop (they change anyway, e.g. per direction); ``fresh`` names
    the new variables."""
    memo, rewritten, pre, new_vars = {}, {}, {}, {}
    names = dict(prog.vars)

    def hoisted_value(e, loop, made: list) -> sp.Symbol:
        key = (loop, sp.srepr(e))
        if key not in memo:
            # function calls on their own first: computed once if shared
            calls = sorted((f for f in e.atoms(sp.Function) if f != e
                            and not isinstance(f, sp.Piecewise)),
                           key=lambda f: len(sp.srepr(f)))
            for f in calls:
                if f in e.atoms(sp.Function):
                    e = e.xreplace({f: hoisted_value(f, loop, made)})
            args = tuple(sorted(s.name for s in e.free_symbols if s.name in names))
            shape = broadcast_shape([names[n].shape for n in args])
            name = fresh("fac")
            names[name] = new_vars[name] = Var(name, shape)
            made.append(Hoisted(loop, name, e, args, shape))
            memo[key] = sp.Symbol(name)
        return memo[key]

    for op in prog.ops:
        if not op.primitive.elementwise or op.loop is None:
            continue
        loop, expr, made = op.loop, op.attrs["expr"], []
        defined = {o.out for o in prog.ops if o.loop == loop}

        def before(e) -> bool:     # computable before the loop, from arrays
            ns = [s.name for s in e.free_symbols if s.name in names]
            return bool(ns) and not any(n in defined or n in varying for n in ns)

        def worth(e) -> bool:      # an operation, not a bare value
            return not (e.is_Symbol or e.is_Number)

        def split(e):
            if before(e) and worth(e):
                return hoisted_value(e, loop, made)
            if e.is_Add or e.is_Mul:
                inv = [a for a in e.args if before(a)]
                rest = [split(a) for a in e.args if not before(a)]
                if len(inv) >= 2 or (len(inv) == 1 and worth(inv[0])):
                    inv = [hoisted_value(e.func(*inv), loop, made)]
                return e.func(*inv, *rest)
            if e.is_Pow:
                return e.func(split(e.base), e.exp)
            if isinstance(e, sp.Function) and not isinstance(e, sp.Piecewise):
                return e.func(*[split(a) for a in e.args])
            return e

        new = split(expr)
        if made:
            pre[op.out] = made
        if new == expr:
            continue
        args = tuple(sorted(s.name for s in new.free_symbols if s.name in names))
        rewritten[op.out] = dataclasses.replace(op, args=args, attrs={**op.attrs, "expr": new})
    return rewritten, pre, new_vars
