"""``take_rows``: rows of a table picked per row of the output, an embedding
lookup.  With an index (an integer (R, 1) matrix, e.g. the token ids X):
out[r] = E[X[r]], so (T*N, F) from E (V, F).  Without one (``steps`` T):
out[t*N + n] = P[t], every row of P (T, F) repeated for the N samples of
its step (positional embeddings in the time-major layout).  Linear in the
table; the index carries no derivative.  Its adjoint is ``add_rows`` (a
scatter-add of rows: the gradient of an embedding table)."""
from __future__ import annotations

from ..shapes import code, dim_code, seq_dim, symbolic
from .base import Primitive, register, tangent_name, wanted


def index_text(op, names) -> str:
    """The index of a take_rows/add_rows op as equations show it."""
    return names.get(op.args[1], op.args[1]) if len(op.args) > 1 else "t"


def _first(op) -> str:
    """With steps: any, the table's first T rows (NumPy slice), else nothing."""
    return f"[:{code(op.attrs['steps'])}]" if "steps" in op.attrs else ""


@register
class TakeRows(Primitive):
    name = "take_rows"

    def zero_when(self, op, zero: set) -> bool:
        return op.args[0] in zero           # linear in its matrix

    def build(self, g, table: str, index: str | None = None, steps: int | None = None,
              base: str = "take", label: str = "", comment: str = "") -> str:
        v, f = g.shape(table)
        if index is not None:
            if g.shape(index)[1] != 1 or g.vars[index].differentiable:
                raise ValueError(f"take_rows: the index {index} must be an integer column")
            rows, args = g.shape(index)[0], (table, index)
        else:
            # steps: any: T rows of a table of T_max (the API refuses T > T_max)
            if steps != v and not symbolic(steps):
                raise ValueError(f"take_rows: a table of {v} rows for {steps} steps")
            rows, args = seq_dim(steps), (table,)
        attrs = {"rows": v}
        if index is None and symbolic(steps):
            attrs["steps"] = steps
        return g.emit(self.name, base, (rows, f), args, attrs, label, comment)

    def vjp(self, g, op, gout, only=None):
        table = op.args[0]
        if not wanted(g, table, only):
            return {}
        return {table: g.add_rows(gout, op.args[1] if len(op.args) > 1 else None,
                                  op.attrs["rows"], base="d_" + table,
                                  label="δ" + g.vars[table].label)}

    def jvp(self, g, op, t):
        table = op.args[0]
        if table not in t:
            return None
        base, label = tangent_name(g, op)
        index = op.args[1] if len(op.args) > 1 else None
        return g.take_rows(t[table], index, None if index else op.attrs.get("steps", op.attrs["rows"]),
                           base=base, label=label)

    def equation(self, op, names, latex=False):
        e = names.get(op.args[0], op.args[0])
        if len(op.args) > 1:
            x = index_text(op, names)
            return rf"{e}\left[{x}\right]" if latex else f"{e}[{x}]"
        if latex:
            return rf"\mathbf{{1}}_N \otimes {e}"
        return f"{e} repeated per sample (1_N ⊗ {e})"

    def numpy(self, em, op, loop):
        e = em.acc(op.args[0], loop)
        if len(op.args) > 1:
            return f"{e}[{em.acc(op.args[1], loop)}[:, 0]]"
        return f"numpy.repeat({e}{_first(op)}, N, axis=0)"

    def c(self, em, op, loop):
        em.use("take_rows")
        r, f = em.shape(op.out, loop)
        idx = em.ptr(op.args[1], loop) if len(op.args) > 1 else "NULL"
        return [f"bpg_take_rows({dim_code(r)}, {f}, N, {idx}, {em.ptr(op.args[0], loop)}, "
                f"{em.ptr(op.out, loop)});"]

    # k directions: the table's tangent (V, K, F) is a table of rows of K·F
    def batched_rule(self, op, batched):
        return op.args[0] in batched

    def numpy_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("take_rows: the table carries the directions")
        v, f = op.attrs["rows"], em.lshape(op.out, loop)[1]
        e = f"{em.acc(op.args[0], loop)}.reshape({v}, K*{f})"
        if len(op.args) > 1:
            return f"{e}[{em.acc(op.args[1], loop)}[:, 0]].reshape(-1, {f})"
        return f"numpy.repeat({e}{_first(op)}, NB, axis=0).reshape(-1, {f})"

    def c_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("take_rows: the table carries the directions")
        em.use("take_rows")
        r, f = em.lshape(op.out, loop)
        idx = em.ptr(op.args[1], loop) if len(op.args) > 1 else "NULL"
        return [f"bpg_take_rows({r}, K*{f}, NB, {idx}, {em.ptr(op.args[0], loop)}, "
                f"{em.ptr(op.out, loop)});"]
