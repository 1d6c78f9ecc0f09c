"""``put_argmax``: per row, ``val`` (one column) placed where ``sel`` has its
first maximum, zeros elsewhere: the adjoint of ``take_argmax`` (max pooling
routes the error to the arg-max)."""
from __future__ import annotations

from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted


@register
class PutArgmax(Primitive):
    name = "put_argmax"

    def build(self, g, sel: str, val: str, base: str = "mxb", label: str = "") -> str:
        if g.shape(val) != (g.shape(sel)[0], 1):
            raise ValueError(f"put_argmax: {g.shape(val)} for {g.shape(sel)}")
        out = g.emit(self.name, base, g.shape(sel), (sel, val), {}, label)
        g.vars[out].differentiable = g.vars[val].differentiable
        return out

    def vjp(self, g, op, gout, only=None):
        sel, val = op.args
        if not wanted(g, val, only):
            return {}
        return {val: g.take_argmax(sel, gout, base="d_" + val, label="δ" + g.vars[val].label)}

    def jvp(self, g, op, t):
        sel, val = op.args
        if val not in t:
            return None
        base, label = tangent_name(g, op)
        return g.put_argmax(sel, t[val], base=base, label=label)

    def equation(self, op, names, latex=False):
        sel, val = (names.get(a, a) for a in op.args)
        if latex:
            return (rf"{val} \text{{ at the first argmax of each row of }} {sel}"
                    r"\text{, 0 elsewhere}")
        return f"{val} at the first argmax of each row of {sel}, 0 elsewhere"

    def numpy(self, em, op, loop):
        sel, val = (em.acc(a, loop) for a in op.args)
        return f"_put_argmax({sel}, {val})"

    def c(self, em, op, loop):
        em.use("put_argmax")
        r, c = em.shape(op.args[0], loop)
        sel, val = (em.ptr(a, loop) for a in op.args)
        return [f"bpg_put_argmax({dim_code(r)}, {c}, {sel}, {val}, {em.ptr(op.out, loop)});"]
