"""``add_rows``: the adjoint of ``take_rows``, a scatter-add of rows into a
table of ``rows`` rows: out[v] = Σ_{r: X[r] = v} A[r] (with an index X), or
out[t] = Σ_n A[t*N + n] (without: the sum over the samples of each step).
The gradient of an embedding table E is add_rows(δO, X): as a matrix
Oneᵀ(X)·δO with One(X) the (T*N, V) one-hot matrix of the ids, so its rank
is at most min(T*N, distinct ids)."""
from __future__ import annotations

from ..shapes import code, dim_code, dim_coeffs, symbolic
from .base import Primitive, register, tangent_name, wanted
from .take_rows import index_text


def _steps(em, op):
    """T as code when ``op`` sums the steps of a steps: any sequence (into
    a table of T_max rows), else None."""
    if len(op.args) > 1:
        return None
    t = dim_coeffs(em.prog.vars[op.args[0]].shape[0])[0]
    return code(t) if symbolic(t) else None


@register
class AddRows(Primitive):
    name = "add_rows"

    def zero_when(self, op, zero: set) -> bool:
        return op.args[0] in zero           # linear in its matrix

    def build(self, g, a: str, index: str | None, rows: int, base: str = "addr",
              label: str = "", comment: str = "") -> str:
        r, f = g.shape(a)
        if index is not None and g.shape(index) != (r, 1):
            raise ValueError(f"add_rows: index {index} {g.shape(index)} for {a} {(r, f)}")
        args = (a,) if index is None else (a, index)
        return g.emit(self.name, base, (rows, f), args, {"rows": rows}, label, comment)

    def vjp(self, g, op, gout, only=None):
        a = op.args[0]
        if not wanted(g, a, only):
            return {}
        index = op.args[1] if len(op.args) > 1 else None
        steps = dim_coeffs(g.vars[op.args[0]].shape[0])[0] if index is None else None
        return {a: g.take_rows(gout, index, steps if symbolic(steps) else op.attrs["rows"],
                               base="d_" + a, label="δ" + g.vars[a].label)}

    def jvp(self, g, op, t):
        a = op.args[0]
        if a not in t:
            return None
        base, label = tangent_name(g, op)
        return g.add_rows(t[a], op.args[1] if len(op.args) > 1 else None, op.attrs["rows"],
                          base=base, label=label)

    def equation(self, op, names, latex=False):
        a, x = names.get(op.args[0], op.args[0]), index_text(op, names)
        if len(op.args) == 1:       # each step's rows summed over the samples
            return (rf"(\mathbf{{1}}_N^{{\top}} \otimes I) \cdot {a}" if latex
                    else f"(1_Nᵀ ⊗ I)·{a}")
        if latex:
            return rf"\operatorname{{onehot}}({x})^{{\top}} \cdot {a}"
        return f"onehot({x})ᵀ·{a}"

    def numpy(self, em, op, loop):
        a, v = em.acc(op.args[0], loop), op.attrs["rows"]
        if len(op.args) > 1:
            x = em.acc(op.args[1], loop)
            return f"(numpy.arange({v})[:, None] == {x}[:, 0]).astype(DTYPE) @ {a}"
        t = _steps(em, op)
        if t is not None:   # steps: any: T of the table's rows, zero after
            return f"_pad_rows({a}.reshape({t}, N, -1).sum(axis=1), {v})"
        return f"{a}.reshape({v}, N, -1).sum(axis=1)"

    def c(self, em, op, loop):
        em.use("add_rows")
        r, f = em.shape(op.args[0], loop)
        idx = em.ptr(op.args[1], loop) if len(op.args) > 1 else "NULL"
        return [f"bpg_add_rows({dim_code(r)}, {op.attrs['rows']}, {f}, N, {idx}, "
                f"{em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)});"]

    # k directions: (R, K, F) rows of K·F entries scattered into (V, K, F)
    def batched_rule(self, op, batched):
        return op.args[0] in batched

    def numpy_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("add_rows: the rows carry the directions")
        a, v = em.acc(op.args[0], loop), op.attrs["rows"]
        f = em.lshape(op.args[0], loop)[1]
        if len(op.args) > 1:
            x = em.acc(op.args[1], loop)
            return (f"((numpy.arange({v})[:, None] == {x}[:, 0]).astype(DTYPE) @ "
                    f"{a}.reshape(-1, K*{f})).reshape(-1, {f})")
        t = _steps(em, op)
        if t is not None:
            return f"_pad_rows({a}.reshape({t}, NB, K*{f}).sum(axis=1), {v}).reshape(-1, {f})"
        return f"{a}.reshape({v}, NB, K*{f}).sum(axis=1).reshape(-1, {f})"

    def c_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("add_rows: the rows carry the directions")
        em.use("add_rows")
        r, f = em.lshape(op.args[0], loop)
        idx = em.ptr(op.args[1], loop) if len(op.args) > 1 else "NULL"
        return [f"bpg_add_rows({r}, {op.attrs['rows']}, K*{f}, NB, {idx}, "
                f"{em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)});"]
