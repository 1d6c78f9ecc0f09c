"""``scatter``: the adjoint of ``gather`` (col2im): per sample, every entry
of the output block is the sum of the input entries whose pattern index
points at it (zero where none does)."""
from __future__ import annotations

from ..patterns import _pattern_index
from ..shapes import dim_coeffs
from ..printers import pattern_equation
from .base import Unary, register, wanted
from .gather import block, c_kernel, im2col_image, image, per_sample, rows_cols, sizes


def transposed_back(pat) -> str:
    """The sizes of the transpose back, F x S -> S x F."""
    return f"{pat[2]}, {pat[1]}"


#: the adjoints of gather.py's C_KERNELS (kind -> runtime file, helper, its
#: arguments after N, the entries per sample of the output); that of a
#: transpose is the transpose back (a permutation: no zeroing, no sums)
C_KERNELS = {
    "im2col": ("col2im", "col2im", sizes, im2col_image),
    "windows": ("windows_adj", "windows_adj", sizes, image),
    "transpose": ("transpose_blocks", "transpose_blocks", transposed_back, block),
}


@register
class Scatter(Unary):
    name = "scatter"
    batched_in_c = False     # see Primitive.batched_in_c

    def build(self, g, a: str, pattern: tuple, out_shape: tuple, base: str = "sca",
              label: str = "") -> str:
        idx = _pattern_index(tuple(pattern))
        if idx.size != per_sample(g.shape(a)) or idx.max() >= per_sample(out_shape):
            raise ValueError(f"scatter {pattern}: sizes do not match {g.shape(a)} -> {out_shape}")
        return g.emit(self.name, base, tuple(out_shape), (a,),
                      {"pattern": tuple(pattern), "s_out": per_sample(out_shape)}, label)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        r, c = g.shape(a)
        return {a: g.gather(gout, op.attrs["pattern"], dim_coeffs(r)[0], c, base="d_" + a,
                            label="δ" + g.vars[a].label)}

    def apply_to(self, g, op, a, base, label):
        return g.scatter(a, op.attrs["pattern"], g.shape(op.out), base=base, label=label)

    def equation(self, op, names, latex=False):
        return pattern_equation(op.attrs["pattern"], names.get(op.args[0], op.args[0]), latex,
                                adjoint=True)

    def numpy(self, em, op, loop):
        return (f"_scatter({em.acc(op.args[0], loop)}, _pattern_index({op.attrs['pattern']!r}), "
                f"N, {op.attrs['s_out']}, {em.shape(op.out, loop)[1]})")

    def c(self, em, op, loop):
        call = c_kernel(C_KERNELS, em, op, loop, op.attrs["s_out"])
        if call:
            return call
        em.use("scatter")
        table = em.table(_pattern_index(op.attrs["pattern"]))
        return [f"bpg_scatter(N, {op.attrs['s_out']}, {per_sample(em.shape(op.args[0], loop))}, "
                f"{table}, {em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)});"]

    # k directions at once: the adjoint of Gather's batched rules
    def batched_rule(self, op, batched) -> bool:
        return op.args[0] in batched

    def c_batched(self, em, op, loop):
        (a,) = op.args
        if not em.is_batched(a):
            raise NotImplementedError("scatter of a fixed value: not a tangent")
        em.use("scatter_dirs")
        table = em.table(_pattern_index(op.attrs["pattern"]))
        (ao, co), (ai, ci) = rows_cols(em.prog.vars[a].shape), rows_cols(em.prog.vars[op.out].shape)
        return [f"bpg_scatter_dirs(NB, K, {ai}, {ci}, {ao}, {co}, {table}, {em.ptr(a, loop)}, "
                f"{em.ptr(op.out, loop)});"]

    def numpy_batched(self, em, op, loop):
        (a,) = op.args
        if not em.is_batched(a):
            raise NotImplementedError("scatter of a fixed value: not a tangent")
        (ao, co), (ai, ci) = rows_cols(em.prog.vars[a].shape), rows_cols(em.prog.vars[op.out].shape)
        return (f"_by_row(_scatter(_by_direction({em.acc(a, loop)}, NB, K, {ao}, {co}), "
                f"_pattern_index({op.attrs['pattern']!r}), NB*K, {ai * ci}, {ci}), "
                f"NB, K, {ai}, {ci})")
