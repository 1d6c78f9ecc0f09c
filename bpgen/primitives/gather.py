"""``gather``: per sample, an output block read from the sample's input
block by a static index pattern (zeros where the pattern says -1): how
images are unfolded into patches (im2col) and pooling windows, and how
pixels x channels become channels x pixels.  Linear; its adjoint is
``scatter`` (col2im: each input entry sums the outputs that read it)."""
from __future__ import annotations

from ..patterns import _pattern_index
from ..shapes import dim_coeffs
from ..printers import pattern_equation
from .base import Unary, register, wanted


def rows_dim(rows: int):
    """The row dimension of ``rows`` rows per sample."""
    return "N" if rows == 1 else f"{rows}*N"


def per_sample(shape) -> int:
    """Entries per sample of a matrix whose rows are a multiple of N."""
    a, b = dim_coeffs(shape[0])
    if b or not a:
        raise ValueError(f"not a per-sample matrix: {shape}")
    return a * shape[1]


@register
class Gather(Unary):
    name = "gather"

    def build(self, g, a: str, pattern: tuple, rows: int, cols: int, base: str = "gat",
              label: str = "", comment: str = "") -> str:
        s_in = per_sample(g.shape(a))
        idx = _pattern_index(tuple(pattern))
        if idx.size != rows * cols or idx.max() >= s_in:
            raise ValueError(f"gather {pattern}: {idx.size} entries for {rows}x{cols}, "
                             f"input has {s_in} per sample")
        return g.emit(self.name, base, (rows_dim(rows), cols), (a,),
                      {"pattern": tuple(pattern), "s_in": s_in, "in_shape": g.shape(a)},
                      label, comment)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.scatter(gout, op.attrs["pattern"], op.attrs["in_shape"],
                             base="d_" + a, label="δ" + g.vars[a].label)}

    def apply_to(self, g, op, a, base, label):
        r, c = g.shape(op.out)
        return g.gather(a, op.attrs["pattern"], dim_coeffs(r)[0], c, base=base, label=label)

    def equation(self, op, names, latex=False):
        return pattern_equation(op.attrs["pattern"], names.get(op.args[0], op.args[0]), latex)

    def numpy(self, em, op, loop):
        r, c = em.shape(op.out, loop)
        return (f"_gather({em.acc(op.args[0], loop)}, _pattern_index({op.attrs['pattern']!r}), "
                f"N, {dim_coeffs(r)[0]}, {c})")

    def c(self, em, op, loop):
        em.use("gather")
        table = em.table(_pattern_index(op.attrs["pattern"]))
        r, c = em.shape(op.out, loop)
        return [f"bpg_gather(N, {op.attrs['s_in']}, {per_sample((r, c))}, {table}, "
                f"{em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)});"]
