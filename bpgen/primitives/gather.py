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


def rows_cols(shape) -> tuple:
    """(rows per sample, columns) of a per-sample matrix."""
    return dim_coeffs(shape[0])[0], shape[1]


def sizes(pat) -> str:
    """A pattern's sizes as C arguments."""
    return ", ".join(map(str, pat[1:]))


def image(pat) -> int:
    """Entries per sample of the C x H x W image an im2col or windows pattern reads."""
    return pat[1] * pat[2] * pat[3]


#: the largest zero-bordered image runtime/im2col.c copies a padded sample
#: into (on the stack, BPG_PADDED_MAX there)
PADDED_MAX = 4096


def im2col_image(pat) -> int:
    """``image`` of an im2col pattern without padding or whose padded image
    fits PADDED_MAX, else -1 (no image matches: the table's gather)."""
    c, h, w, _, _, p = pat[1:]
    return image(pat) if p == 0 or c * (h + 2 * p) * (w + 2 * p) <= PADDED_MAX else -1


def block(pat) -> int:
    """Entries per sample of the S x F block a transpose pattern reads."""
    return pat[1] * pat[2]


#: the C runtime's loop nests for a pattern kind, used instead of
#: bpg_gather's index table (read entry by entry: an index load and a
#: select per entry, see docs/performance.md): kind -> (runtime file,
#: helper, the helper's arguments after N, the entries per sample the
#: op's input must have); scatter.py has the adjoints
C_KERNELS = {
    "im2col": ("im2col", "im2col", sizes, im2col_image),
    "windows": ("windows", "windows", sizes, image),
    "transpose": ("transpose_blocks", "transpose_blocks", sizes, block),
}


def c_kernel(kernels, em, op, loop, entries):
    """The call of the pattern's loop nest in ``kernels``, or None (the table)."""
    pat = op.attrs["pattern"]
    kernel = kernels.get(pat[0])
    if kernel is None or kernel[3](pat) != entries:
        return None
    em.use(kernel[0])
    return [f"bpg_{kernel[1]}(N, {kernel[2](pat)}, {em.ptr(op.args[0], loop)}, "
            f"{em.ptr(op.out, loop)});"]


@register
class Gather(Unary):
    name = "gather"
    batched_in_c = False     # see Primitive.batched_in_c

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
        call = c_kernel(C_KERNELS, em, op, loop, op.attrs["s_in"])
        if call:
            return call
        em.use("gather")
        table = em.table(_pattern_index(op.attrs["pattern"]))
        r, c = em.shape(op.out, loop)
        return [f"bpg_gather(N, {op.attrs['s_in']}, {per_sample((r, c))}, {table}, "
                f"{em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)});"]

    # k directions at once (hessian_columns): the gather of each sample's
    # block in each direction, rows stored with their K directions together
    def batched_rule(self, op, batched) -> bool:
        return op.args[0] in batched

    def c_batched(self, em, op, loop):
        (a,) = op.args
        if not em.is_batched(a):
            raise NotImplementedError("gather of a fixed value: not a tangent")
        em.use("gather_dirs")
        table = em.table(_pattern_index(op.attrs["pattern"]))
        (ai, ci), (ao, co) = rows_cols(em.prog.vars[a].shape), rows_cols(em.prog.vars[op.out].shape)
        return [f"bpg_gather_dirs(NB, K, {ai}, {ci}, {ao}, {co}, {table}, {em.ptr(a, loop)}, "
                f"{em.ptr(op.out, loop)});"]

    def numpy_batched(self, em, op, loop):
        (a,) = op.args
        if not em.is_batched(a):
            raise NotImplementedError("gather of a fixed value: not a tangent")
        (ai, ci), (ao, co) = rows_cols(em.prog.vars[a].shape), rows_cols(em.prog.vars[op.out].shape)
        return (f"_by_row(_gather(_by_direction({em.acc(a, loop)}, NB, K, {ai}, {ci}), "
                f"_pattern_index({op.attrs['pattern']!r}), NB*K, {ao}, {co}), NB, K, {ao}, {co})")
