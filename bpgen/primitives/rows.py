"""``rows``: step ``block`` (rows block*N .. block*N+N-1) of a time-major sequence."""
from __future__ import annotations

import sympy as sp

from ..shapes import code, dim_coeffs, plus, symbolic, times_n
from .base import Unary, cot_name, register, wanted


@register
class Rows(Unary):
    name = "rows"
    is_view = True
    batch_as_rows = True

    def build(self, g, a: str, block: int, base: str = "r", label: str = "") -> str:
        r, c = g.shape(a)
        steps, extra = dim_coeffs(r)
        if symbolic(steps) or symbolic(block):      # steps: any (block T - 1: the last)
            ok = not extra and sp.simplify(steps - block - 1).is_nonnegative is not False
        else:
            ok = 0 <= block < steps and not extra
        if not ok:
            raise ValueError(f"rows: step {block} out of range for {a} {(r, c)}")
        return g.emit(self.name, base, ("N", c), (a,), {"block": block, "steps": steps},
                      label)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.place_rows(gout, op.attrs["block"], op.attrs["steps"], **cot_name(g, a))}

    def apply_to(self, g, op, a, base, label):
        return g.rows(a, op.attrs["block"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        return f"{a}(t{{=}}{op.attrs['block']})" if latex else f"{a}(t={op.attrs['block']})"

    def numpy(self, em, op, loop):
        blk = op.attrs["block"]
        return f"{em.acc(op.args[0], loop)}[{times_n(blk)}:{times_n(plus(blk, 1))}]"

    def c(self, em, op, loop):
        (a,) = op.args
        r, c = em.shape(op.out, loop)
        return [f"memcpy({em.ptr(op.out, loop)}, {em.name(a)} + {code(op.attrs['block'])}*{c}*N, "
                f"{em.bytes((r, c))});"]
