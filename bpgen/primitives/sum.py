"""``sum``: column sums (axis 0, 1ᵀ·A), row sums (axis 1, A·1) or the total."""
from __future__ import annotations

import sympy as sp

from ..shapes import dim_code
from .base import Unary, register, wanted

_C_HELPER = {0: "colsum", 1: "rowsum", None: "sumall"}


@register
class Sum(Unary):
    name = "sum"

    def zero_when(self, op, zero: set) -> bool:
        return op.args[0] in zero           # linear in its matrix
    reduces = True

    def build(self, g, a: str, axis, base: str = "s", label: str = "",
              comment: str = "") -> str:
        r, c = g.shape(a)
        shape = {0: (1, c), 1: (r, 1), None: (1, 1)}[axis]
        if shape == (r, c):
            return a
        return g.emit(self.name, base, shape, (a,), {"axis": axis}, label, comment)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        # broadcast the cotangent back to the summed shape
        return {a: g.map(sp.Symbol(gout), base="d_" + a, shape=g.shape(a),
                         label="δ" + g.vars[a].label)}

    def apply_to(self, g, op, a, base, label):
        return g.sum(a, op.attrs["axis"], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        axis = op.attrs["axis"]
        if latex:
            return {0: rf"\mathbf{{1}}^{{\top}} \cdot {a}", 1: rf"{a} \cdot \mathbf{{1}}",
                    None: rf"\mathbf{{1}}^{{\top}} \cdot {a} \cdot \mathbf{{1}}"}[axis]
        return {0: f"1ᵀ·{a}", 1: f"{a}·1", None: f"1ᵀ·{a}·1"}[axis]

    def numpy(self, em, op, loop):
        axis = op.attrs["axis"]
        src = em.acc(op.args[0], loop)
        # row sums and totals accumulate in double, as the C backend's do
        wide = ", dtype=numpy.float64" if em.dtype == "float32" and axis != 0 else ""
        code = (f"{src}.sum(keepdims=True{wide})" if axis is None
                else f"{src}.sum(axis={axis}, keepdims=True{wide})")
        if wide:
            return f"{code}.astype(DTYPE)"
        into = em.into(op, loop)
        if into is None or into[1]:
            return code
        return [f"{code[:-1]}, out={into[0]})"]    # written where it goes

    def c(self, em, op, loop):
        (a,) = op.args
        ar, ac = em.shape(a, loop)
        fn = _C_HELPER[op.attrs["axis"]]
        em.use(fn)
        return [f"bpg_{fn}({dim_code(ar)}, {dim_code(ac)}, {em.ptr(a, loop)}, "
                f"{em.ptr(op.out, loop)});"]

    def c_batched(self, em, op, loop):
        (a,) = op.args
        axis = op.attrs["axis"]
        if axis == 1 and em.is_batched(a):       # row sums of N·K rows
            return self.c(em, op, loop)
        if axis == 0 and em.is_batched(a):       # column sums of the (r, K·c) matrix
            r, c = em.lshape(a, loop)
            em.use("colsum")
            return [f"bpg_colsum({r}, K*{c}, {em.ptr(a, loop)}, {em.ptr(op.out, loop)});"]
        if axis is None and em.is_batched(a):    # each direction's total, in double
            r, c = em.lshape(a, loop)
            src = em.ptr(a, loop)
            return ["for (int64_t d = 0; d < K; d++) {",
                    "    double acc = 0;",
                    f"    for (int64_t rr = 0; rr < {r}; rr++)",
                    f"        for (int64_t cc = 0; cc < {c}; cc++) "
                    f"acc += {src}[(rr*K + d)*{c} + cc];",
                    f"    {em.ptr(op.out, loop)}[d] = (real)acc;",
                    "}"]
        raise NotImplementedError(f"sum over axis {axis}: no C rule for k directions")

    def numpy_batched(self, em, op, loop):
        (a,) = op.args
        axis = op.attrs["axis"]
        if axis == 1 and em.is_batched(a):
            return self.numpy(em, op, loop)
        if axis == 0 and em.is_batched(a):
            r, c = em.lshape(a, loop)
            return f"{em.acc(a, loop)}.reshape({r}, K*{c}).sum(axis=0).reshape(K, {c})"
        if axis is None and em.is_batched(a):    # each direction's total, in double
            r, c = em.lshape(a, loop)
            return (f"{em.acc(a, loop)}.reshape({r}, K, {c}).sum(axis=(0, 2), "
                    f"dtype=numpy.float64).astype(DTYPE).reshape(K, 1)")
        raise NotImplementedError(f"sum over axis {axis}: no NumPy rule for k directions")

    def batched_rule(self, op, batched) -> bool:
        return op.attrs["axis"] in (0, 1, None) and op.args[0] in batched
