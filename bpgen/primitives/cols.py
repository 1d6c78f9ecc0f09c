"""``cols``: columns start:stop of A (e.g. one gate of an LSTM)."""
from __future__ import annotations

from ..shapes import dim_code
from .base import Unary, cot_name, register, wanted


@register
class Cols(Unary):
    name = "cols"
    is_view = True
    batch_as_rows = True

    def build(self, g, a: str, start: int, stop: int, base: str = "c",
              label: str = "") -> str:
        r, c = g.shape(a)
        if not 0 <= start < stop <= c:
            raise ValueError(f"cols {start}:{stop} out of range for {a} {(r, c)}")
        if (start, stop) == (0, c):
            return a
        return g.emit(self.name, base, (r, stop - start), (a,),
                      {"start": start, "stop": stop}, label)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.place_cols(gout, op.attrs["start"], g.shape(a)[1], **cot_name(g, a))}

    def apply_to(self, g, op, a, base, label):
        return g.cols(a, op.attrs["start"], op.attrs["stop"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        if latex:
            return rf"{a}[:,\, {op.attrs['start']}{{:}}{op.attrs['stop']}]"
        return f"{a}[:, {op.attrs['start']}:{op.attrs['stop']}]"

    def numpy(self, em, op, loop):
        return f"{em.acc(op.args[0], loop)}[:, {op.attrs['start']}:{op.attrs['stop']}]"

    def c(self, em, op, loop):
        (a,) = op.args
        r, c = em.shape(op.out, loop)
        em.use("copy_cols")
        return [f"bpg_copy_cols({dim_code(r)}, {c}, {em.ptr(a, loop)}, "
                f"{em.shape(a, loop)[1]}, {op.attrs['start']}, {em.ptr(op.out, loop)}, {c}, 0);"]
