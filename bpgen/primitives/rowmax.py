"""``rowmax``: the maximum of each row.  It carries no gradient: it is only
used where the result does not depend on it (the shift of a log-sum-exp)."""
from __future__ import annotations

from ..shapes import dim_code
from .base import Primitive, register


@register
class RowMax(Primitive):
    name = "rowmax"
    differentiable = False

    def build(self, g, a: str, base: str = "m", label: str = "") -> str:
        r, _ = g.shape(a)
        return g.emit(self.name, base, (r, 1), (a,), {}, label)

    def vjp(self, g, op, gout, only=None):
        return {}

    def jvp(self, g, op, t):
        return None

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        return rf"\operatorname{{rowmax}}({a})" if latex else f"rowmax({a})"

    def numpy(self, em, op, loop):
        return f"{em.acc(op.args[0], loop)}.max(axis=1, keepdims=True)"

    def c(self, em, op, loop):
        (a,) = op.args
        ar, ac = em.shape(a, loop)
        em.use("rowmax")
        return [f"bpg_rowmax({dim_code(ar)}, {dim_code(ac)}, {em.ptr(a, loop)}, "
                f"{em.ptr(op.out, loop)});"]
