"""``place_cols``: A placed at columns start: of a zero matrix ``total`` wide
(the adjoint of ``cols``)."""
from __future__ import annotations

import sympy as sp

from ..shapes import dim_code
from .base import Unary, cot_name, register, wanted


@register
class PlaceCols(Unary):
    name = "place_cols"
    batch_as_rows = True

    def build(self, g, a: str, start: int, total: int, base: str = "c",
              label: str = "") -> str:
        r, c = g.shape(a)
        if (start, c) == (0, total):
            return a
        return g.emit(self.name, base, (r, total), (a,),
                      {"start": start, "stop": start + c, "total": total}, label)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.cols(gout, op.attrs["start"], op.attrs["stop"], **cot_name(g, a))}

    def merge_parts(self, g, name, ops):
        """Column blocks of one matrix that do not overlap (e.g. the LSTM
        gates' cotangents): their sources concatenated, zeros between."""
        shape = g.shape(name)
        spans = sorted((o.attrs["start"], o.attrs["stop"], o.args[0]) for o in ops)
        if not all(a[1] <= b[0] for a, b in zip(spans, spans[1:])):
            return None
        pieces, pos = [], 0
        for start, stop, src in spans:
            if start > pos:
                pieces.append(g.map(sp.Integer(0), base="zeros", shape=(shape[0], start - pos)))
            pieces.append(src)
            pos = stop
        if pos < shape[1]:
            pieces.append(g.map(sp.Integer(0), base="zeros", shape=(shape[0], shape[1] - pos)))
        return g.concat(pieces, base="d_" + name, label="δ" + g.vars[name].label)

    def apply_to(self, g, op, a, base, label):
        return g.place_cols(a, op.attrs["start"], op.attrs["total"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        start, stop, total = op.attrs["start"], op.attrs["stop"], op.attrs["total"]
        parts = (["0"] if start else []) + [a] + (["0"] if stop < total else [])
        if latex:
            return (r"\left[" + r",\ ".join(parts) + r"\right]"
                    rf" \text{{ (columns }} {start}{{:}}{stop} \text{{ of }} {total})")
        return f"[{', '.join(parts)}] (columns {start}:{stop} of {total})"

    def numpy(self, em, op, loop):
        return (f"_place_cols({em.acc(op.args[0], loop)}, {op.attrs['start']}, "
                f"{op.attrs['total']})")

    def c(self, em, op, loop):
        (a,) = op.args
        r, c = em.shape(op.out, loop)
        w = em.shape(a, loop)[1]
        em.use("copy_cols")
        return [f"memset({em.ptr(op.out, loop)}, 0, {em.bytes((r, c))});",
                f"bpg_copy_cols({dim_code(r)}, {w}, {em.ptr(a, loop)}, {w}, 0, "
                f"{em.ptr(op.out, loop)}, {c}, {op.attrs['start']});"]
