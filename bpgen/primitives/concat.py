"""``concat``: column-wise concatenation [A, B, ...] of matrices with equal rows."""
from __future__ import annotations

import sympy as sp

from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted


@register
class Concat(Primitive):
    name = "concat"
    places_pieces = True
    batch_as_rows = True

    def build(self, g, parts: list, base: str = "cat", label: str = "") -> str:
        if len(parts) == 1:
            return parts[0]
        rows = {g.shape(p)[0] for p in parts}
        if len(rows) != 1:
            raise ValueError(f"concat of different row counts: {parts}")
        width = sum(g.shape(p)[1] for p in parts)
        return g.emit(self.name, base, (rows.pop(), width), tuple(parts), {}, label)

    def vjp(self, g, op, gout, only=None):
        res, start = {}, 0
        for a in op.args:
            width = g.shape(a)[1]
            if wanted(g, a, only):
                res[a] = g.cols(gout, start, start + width, base="d_" + a,
                                label="δ" + g.vars[a].label)
            start += width
        return res

    def jvp(self, g, op, t):
        if not any(a in t for a in op.args):
            return None
        base, label = tangent_name(g, op)
        parts = [t[a] if a in t else g.map(sp.Integer(0), base="zeros", shape=g.shape(a))
                 for a in op.args]
        return g.concat(parts, base=base, label=label)

    def equation(self, op, names, latex=False):
        if latex:
            return r"\left[" + r",\ ".join(names.get(x, x) for x in op.args) + r"\right]"
        return "[" + ", ".join(names.get(x, x) for x in op.args) + "]"

    def numpy(self, em, op, loop):
        placed = [a for a in op.args if em.placed.get(a, (None,))[0] == op.out]
        if not placed:
            return f"numpy.concatenate([{', '.join(em.acc(a, loop) for a in op.args)}], axis=1)"
        # some pieces were written into their columns already: copy the others
        lines, pos = [f"# ({', '.join(placed)}: written in place)"], 0
        for a in op.args:
            width = em.shape(a, loop)[1]
            if a not in placed:
                lines.append(f"{em.cols(op.out, loop, pos, pos + width)} = {em.acc(a, loop)}")
            pos += width
        return lines

    def c(self, em, op, loop):
        r, c = em.shape(op.out, loop)
        em.use("copy_cols")
        lines, pos = [], 0
        for a in op.args:
            w = em.shape(a, loop)[1]
            lines.append(f"bpg_copy_cols({dim_code(r)}, {w}, {em.ptr(a, loop)}, {w}, 0, "
                         f"{em.ptr(op.out, loop)}, {c}, {pos});")
            pos += w
        return lines
