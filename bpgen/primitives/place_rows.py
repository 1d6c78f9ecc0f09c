"""``place_rows``: A (N rows) placed at step ``block`` of a zero sequence
(the adjoint of ``rows``)."""
from __future__ import annotations

from ..shapes import code, seq_dim
from .base import Unary, cot_name, register, wanted


@register
class PlaceRows(Unary):
    name = "place_rows"
    batch_as_rows = True

    def build(self, g, a: str, block: int, steps: int, base: str = "r",
              label: str = "") -> str:
        _, c = g.shape(a)
        return g.emit(self.name, base, (seq_dim(steps), c), (a,),
                      {"block": block, "steps": steps}, label)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.rows(gout, op.attrs["block"], **cot_name(g, a))}

    def apply_to(self, g, op, a, base, label):
        return g.place_rows(a, op.attrs["block"], op.attrs["steps"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        t, steps = op.attrs["block"], op.attrs["steps"]
        if latex:
            return (rf"{a} \text{{ at }} t{{=}}{t} \text{{, 0 at the other steps }} "
                    rf"(T{{=}}{steps})")
        return f"{a} at t={t}, 0 at the other steps (T={steps})"

    def numpy(self, em, op, loop):
        return (f"_place_rows({em.acc(op.args[0], loop)}, {code(op.attrs['block'])}, "
                f"{code(op.attrs['steps'])})")

    def c(self, em, op, loop):
        (a,) = op.args
        out = em.name(op.out)
        c = em.shape(op.out, loop)[1]
        return [f"memset({out}, 0, {em.bytes(em.prog.vars[op.out].shape)});",
                f"memcpy({out} + {code(op.attrs['block'])}*{c}*N, {em.ptr(a, loop)}, "
                f"sizeof(real)*(size_t)({c}*N));"]
