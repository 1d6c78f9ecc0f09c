"""``cut``: A, but zero at the iterations whose forward step index is a
multiple of ``every``: where truncated BPTT stops the carried cotangent."""
from __future__ import annotations

from ..shapes import code
from .base import Unary, register


@register
class Cut(Unary):
    name = "cut"
    is_view = True
    truncates = True
    batch_as_rows = True

    def build(self, g, a: str, every: int, forward_reverse: bool, base: str = "cut",
              label: str = "") -> str:
        return g.emit(self.name, base, g.shape(a), (a,),
                      {"every": every, "forward_reverse": forward_reverse}, label)

    def vjp(self, g, op, gout, only=None):
        return {}    # only ever applied to cotangents, which are not differentiated

    def apply_to(self, g, op, a, base, label):
        return g.cut(a, op.attrs["every"], op.attrs["forward_reverse"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        if latex:
            return (rf"{a} \text{{, or 0 where the forward step is a multiple of }} "
                    rf"{op.attrs['every']} \text{{ (truncated BPTT)}}")
        return (f"{a}, or 0 where the forward step is a multiple of {op.attrs['every']} "
                f"(truncated BPTT)")

    def _step(self, em, op, loop) -> str:
        steps = em.prog.loops[loop]["steps"]
        return f"{code(steps - 1)} - t" if op.attrs["forward_reverse"] else "t"

    def numpy(self, em, op, loop):
        (a,) = op.args
        return [f"{em.acc(op.out, loop)} = 0 * {em.acc(a, loop)} if "
                f"({self._step(em, op, loop)}) % {op.attrs['every']} == 0 else {em.acc(a, loop)}"]

    def c(self, em, op, loop):
        (a,) = op.args
        size = em.bytes(em.shape(op.out, loop))
        return [f"if (({self._step(em, op, loop)}) % {op.attrs['every']} == 0) "
                f"memset({em.ptr(op.out, loop)}, 0, {size});",
                f"else memcpy({em.ptr(op.out, loop)}, {em.ptr(a, loop)}, {size});"]
