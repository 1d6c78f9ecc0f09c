"""``prev``: a loop variable at the previous iteration (zero at the first):
how recurrent state is carried.  Its derivative rules are loop-wise, so
:func:`bpgen.ir.grad` and :func:`bpgen.ir.tangents` handle it themselves (a
``prev`` of the cotangent, a ``prev`` of the tangent)."""
from __future__ import annotations

from .base import Primitive, register


@register
class Prev(Primitive):
    name = "prev"
    batch_as_rows = True

    def build(self, g, shape: tuple, base: str = "prev", label: str = "") -> str:
        if g.loop is None:
            raise ValueError("state() outside a loop")
        out = g.emit(self.name, base, tuple(shape), (), {}, label)
        g.vars[out].differentiable = True
        return out

    def equation(self, op, names, latex=False):
        if not op.args:
            return "0"
        a = names.get(op.args[0], op.args[0])
        if latex:
            return rf"{a} \text{{ of the previous iteration (0 at the first)}}"
        return f"{a} of the previous iteration (0 at the first)"

    def numpy(self, em, op, loop):
        (src,) = op.args
        out = op.out
        zero = (f"{em.acc(out, loop)} = 0" if em.stepped(out, loop)
                else f"{out} = numpy.zeros((N, {em.shape(out, loop)[1]}), dtype=DTYPE)")
        return ["if it == 0:", f"    {zero}", "else:", f"    {em.acc(out, loop)} = {src}[q0:q1]"]

    def c(self, em, op, loop):
        (src,) = op.args
        r, c = em.shape(op.out, loop)
        size = em.bytes((r, c))
        return [f"if (it == 0) memset({em.ptr(op.out, loop)}, 0, {size});",
                f"else memcpy({em.ptr(op.out, loop)}, {src} + q*{c}*N, {size});"]
