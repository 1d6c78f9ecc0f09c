"""``take_argmax``: per row, the entry of ``val`` where ``sel`` has its
first maximum; ``take_argmax(A, A)`` is the row maximum (max pooling).
The selection is piecewise constant, so the op is linear in ``val`` and
carries no derivative through ``sel``; its adjoint is ``put_argmax``."""
from __future__ import annotations

from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted


@register
class TakeArgmax(Primitive):
    name = "take_argmax"

    def build(self, g, sel: str, val: str, base: str = "mx", label: str = "",
              comment: str = "") -> str:
        if g.shape(sel) != g.shape(val):
            raise ValueError(f"take_argmax: {g.shape(sel)} != {g.shape(val)}")
        out = g.emit(self.name, base, (g.shape(val)[0], 1), (sel, val), {}, label, comment)
        g.vars[out].differentiable = g.vars[val].differentiable
        return out

    def vjp(self, g, op, gout, only=None):
        sel, val = op.args
        if not wanted(g, val, only):
            return {}
        return {val: g.put_argmax(sel, gout, base="d_" + val, label="δ" + g.vars[val].label)}

    def jvp(self, g, op, t):
        sel, val = op.args
        if val not in t:
            return None
        base, label = tangent_name(g, op)
        return g.take_argmax(sel, t[val], base=base, label=label)

    def equation(self, op, names, latex=False):
        sel, val = (names.get(a, a) for a in op.args)
        if op.args[0] == op.args[1]:
            return rf"\operatorname{{rowmax}}({sel})" if latex else f"rowmax({sel})"
        if latex:
            return rf"{val} \text{{ at the first argmax of each row of }} {sel}"
        return f"{val} at the first argmax of each row of {sel}"

    def numpy(self, em, op, loop):
        sel, val = (em.acc(a, loop) for a in op.args)
        return f"_take_argmax({sel}, {val})"

    def c(self, em, op, loop):
        em.use("take_argmax")
        r, c = em.shape(op.args[0], loop)
        sel, val = (em.ptr(a, loop) for a in op.args)
        return [f"bpg_take_argmax({dim_code(r)}, {c}, {sel}, {val}, {em.ptr(op.out, loop)});"]
