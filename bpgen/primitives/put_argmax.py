"""``put_argmax``: per row, ``val`` (one column) placed where ``sel`` has its
first maximum, zeros elsewhere: the adjoint of ``take_argmax`` (max pooling
routes the error to the arg-max).

With ``pattern`` (``("windows", C, H, W, k, s)``), the rows are the windows
of each sample's maps in ``sel`` and the result has the maps' shape:
``windowsᵀ(put_argmax(windows(S), val))`` in one pass, the error added at
each window's arg-max (no window matrix, no dense intermediate)."""
from __future__ import annotations

from ..printers import pattern_equation
from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted
from .gather import per_sample, rows_cols, rows_dim
from .take_argmax import window_args, window_rows


@register
class PutArgmax(Primitive):
    name = "put_argmax"
    batched_in_c = False     # see Primitive.batched_in_c

    def build(self, g, sel: str, val: str, base: str = "mxb", label: str = "",
              pattern: tuple | None = None) -> str:
        rows = g.shape(sel)[0] if pattern is None else rows_dim(
            window_rows(g, sel, tuple(pattern))[0])
        if g.shape(val) != (rows, 1):
            raise ValueError(f"put_argmax: {g.shape(val)} for {g.shape(sel)}")
        attrs = {} if pattern is None else {"pattern": tuple(pattern)}
        out = g.emit(self.name, base, g.shape(sel), (sel, val), attrs, label)
        g.vars[out].differentiable = g.vars[val].differentiable
        return out

    def vjp(self, g, op, gout, only=None):
        sel, val = op.args
        if not wanted(g, val, only):
            return {}
        return {val: g.take_argmax(sel, gout, base="d_" + val, label="δ" + g.vars[val].label,
                                   pattern=op.attrs.get("pattern"))}

    def jvp(self, g, op, t):
        sel, val = op.args
        if val not in t:
            return None
        base, label = tangent_name(g, op)
        return g.put_argmax(sel, t[val], base=base, label=label,
                            pattern=op.attrs.get("pattern"))

    def equation(self, op, names, latex=False):
        sel, val = (names.get(a, a) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:
            sel = pattern_equation(pattern, sel, latex)
        if latex:
            text = (rf"{val} \text{{ at the first argmax of each row of }} {sel}"
                    r"\text{, 0 elsewhere}")
            return (r"\mathrm{windows}^{\top}\left(" + text + r"\right)") if pattern else text
        text = f"{val} at the first argmax of each row of {sel}, 0 elsewhere"
        return f"windowsᵀ({text})" if pattern else text

    def numpy(self, em, op, loop):
        sel, val = (em.acc(a, loop) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:
            rows = per_sample(em.shape(op.args[1], loop))
            r, c = em.shape(op.out, loop)
            idx = f"_pattern_index({pattern!r})"
            wins = f"_gather({sel}, {idx}, N, {rows}, {pattern[4] ** 2})"
            return f"_scatter(_put_argmax({wins}, {val}), {idx}, N, {per_sample((r, c))}, {c})"
        return f"_put_argmax({sel}, {val})"

    def c(self, em, op, loop):
        sel, val = (em.ptr(a, loop) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:
            em.use("put_argmax_windows")
            return [f"bpg_put_argmax_windows(N, {window_args(pattern)}, {sel}, {val}, "
                    f"{em.ptr(op.out, loop)});"]
        em.use("put_argmax")
        r, c = em.shape(op.args[0], loop)
        return [f"bpg_put_argmax({dim_code(r)}, {c}, {sel}, {val}, {em.ptr(op.out, loop)});"]

    # k directions at once: the adjoint of TakeArgmax's batched rules
    def batched_rule(self, op, batched) -> bool:
        return op.args[0] not in batched and op.args[1] in batched

    def c_batched(self, em, op, loop):
        sel, val = op.args
        if em.is_batched(sel) or not em.is_batched(val):
            raise NotImplementedError("put_argmax: only val carries directions")
        ps, pv, out = em.ptr(sel, loop), em.ptr(val, loop), em.ptr(op.out, loop)
        pattern = op.attrs.get("pattern")
        if pattern:
            em.use("put_argmax_windows_dirs")
            return [f"bpg_put_argmax_windows_dirs(NB, K, {window_args(pattern)}, {ps}, {pv}, "
                    f"{out});"]
        em.use("put_argmax_dirs")
        r, c = em.lshape(sel, loop)
        return [f"bpg_put_argmax_dirs({r}, {c}, K, {ps}, {pv}, {out});"]

    def numpy_batched(self, em, op, loop):
        sel, val = op.args
        if em.is_batched(sel) or not em.is_batched(val):
            raise NotImplementedError("put_argmax: only val carries directions")
        s, v = em.acc(sel, loop), em.acc(val, loop)
        pattern = op.attrs.get("pattern")
        if not pattern:
            return f"_put_argmax_dirs({s}, {v}, K)"
        rows, width = per_sample(em.prog.vars[val].shape), pattern[4] ** 2
        _, ci = rows_cols(em.prog.vars[op.out].shape)
        idx = f"_pattern_index({pattern!r})"
        wins = f"_put_argmax_dirs(_gather({s}, {idx}, NB, {rows}, {width}), {v}, K)"
        return (f"_scatter(_by_direction({wins}, NB, K, {rows}, {width}), {idx}, NB*K, {ci}, "
                f"{ci})")
