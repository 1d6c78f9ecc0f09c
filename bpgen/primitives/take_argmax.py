"""``take_argmax``: per row, the entry of ``val`` where ``sel`` has its
first maximum; ``take_argmax(A, A)`` is the row maximum (max pooling).
The selection is piecewise constant, so the op is linear in ``val`` and
carries no derivative through ``sel``; its adjoint is ``put_argmax``.

With ``pattern`` (a ``("windows", C, H, W, k, s)`` gather pattern), the
rows are the windows of each sample's maps, read from ``sel`` and ``val``
themselves: ``take_argmax(windows(S), windows(V))`` in one pass, without
the window matrix (max pooling and its arg-max together)."""
from __future__ import annotations

from ..printers import pattern_equation
from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted
from .gather import per_sample, rows_cols, rows_dim


def window_rows(g, sel: str, pattern) -> tuple:
    """(windows per sample, entries per window) of a windows ``pattern``
    over ``sel``'s per-sample maps; checks that they fit."""
    if pattern[0] != "windows":
        raise ValueError(f"argmax over a {pattern[0]!r} pattern (only windows)")
    c, h, w, k, s = pattern[1:]
    if per_sample(g.shape(sel)) != c * h * w or g.shape(sel)[0] != "N":
        raise ValueError(f"windows {pattern} over {g.shape(sel)}")
    return c * ((h - k) // s + 1) * ((w - k) // s + 1), k * k


def window_args(pattern) -> str:
    """The windows' sizes as C arguments (C, H, W, k, s)."""
    return ", ".join(map(str, pattern[1:]))


@register
class TakeArgmax(Primitive):
    name = "take_argmax"
    batched_in_c = False     # see Primitive.batched_in_c

    def build(self, g, sel: str, val: str, base: str = "mx", label: str = "",
              comment: str = "", pattern: tuple | None = None) -> str:
        if g.shape(sel) != g.shape(val):
            raise ValueError(f"take_argmax: {g.shape(sel)} != {g.shape(val)}")
        if pattern is None:
            out = g.emit(self.name, base, (g.shape(val)[0], 1), (sel, val), {}, label, comment)
        else:
            rows, _ = window_rows(g, sel, tuple(pattern))
            out = g.emit(self.name, base, (rows_dim(rows), 1), (sel, val),
                         {"pattern": tuple(pattern)}, label, comment)
        g.vars[out].differentiable = g.vars[val].differentiable
        return out

    def vjp(self, g, op, gout, only=None):
        sel, val = op.args
        if not wanted(g, val, only):
            return {}
        return {val: g.put_argmax(sel, gout, base="d_" + val, label="δ" + g.vars[val].label,
                                  pattern=op.attrs.get("pattern"))}

    def jvp(self, g, op, t):
        sel, val = op.args
        if val not in t:
            return None
        base, label = tangent_name(g, op)
        return g.take_argmax(sel, t[val], base=base, label=label,
                             pattern=op.attrs.get("pattern"))

    def equation(self, op, names, latex=False):
        sel, val = (names.get(a, a) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:     # the windows, as an argument (no adjoint remark)
            sel, val = (pattern_equation(pattern, a, latex) for a in (sel, val))
        if op.args[0] == op.args[1]:
            return rf"\operatorname{{rowmax}}({sel})" if latex else f"rowmax({sel})"
        if latex:
            return rf"{val} \text{{ at the first argmax of each row of }} {sel}"
        return f"{val} at the first argmax of each row of {sel}"

    def numpy(self, em, op, loop):
        sel, val = (em.acc(a, loop) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:
            rows = per_sample(em.shape(op.out, loop))     # windows per sample
            win = f"_pattern_index({pattern!r}), N, {rows}, {pattern[4] ** 2}"
            if op.args[0] == op.args[1]:    # each window's maximum
                return f"_gather({sel}, {win}).max(axis=1, keepdims=True)"
            return f"_take_argmax(_gather({sel}, {win}), _gather({val}, {win}))"
        return f"_take_argmax({sel}, {val})"

    def c(self, em, op, loop):
        sel, val = (em.ptr(a, loop) for a in op.args)
        pattern = op.attrs.get("pattern")
        if pattern:
            em.use("take_argmax_windows")
            return [f"bpg_take_argmax_windows(N, {window_args(pattern)}, {sel}, {val}, "
                    f"{em.ptr(op.out, loop)});"]
        em.use("take_argmax")
        r, c = em.shape(op.args[0], loop)
        return [f"bpg_take_argmax({dim_code(r)}, {c}, {sel}, {val}, {em.ptr(op.out, loop)});"]

    # k directions at once: the selector is the shared pass's (one value),
    # val a tangent (each row's K directions together)
    def batched_rule(self, op, batched) -> bool:
        return op.args[0] not in batched and op.args[1] in batched

    def c_batched(self, em, op, loop):
        sel, val = op.args
        if em.is_batched(sel) or not em.is_batched(val):
            raise NotImplementedError("take_argmax: only val carries directions")
        ps, pv, out = em.ptr(sel, loop), em.ptr(val, loop), em.ptr(op.out, loop)
        pattern = op.attrs.get("pattern")
        if pattern:
            em.use("take_argmax_windows_dirs")
            return [f"bpg_take_argmax_windows_dirs(NB, K, {window_args(pattern)}, {ps}, {pv}, "
                    f"{out});"]
        em.use("take_argmax_dirs")
        r, c = em.lshape(sel, loop)
        return [f"bpg_take_argmax_dirs({r}, {c}, K, {ps}, {pv}, {out});"]

    def numpy_batched(self, em, op, loop):
        sel, val = op.args
        if em.is_batched(sel) or not em.is_batched(val):
            raise NotImplementedError("take_argmax: only val carries directions")
        s, v = em.acc(sel, loop), em.acc(val, loop)
        pattern = op.attrs.get("pattern")
        if pattern:
            rows, width = per_sample(em.prog.vars[op.out].shape), pattern[4] ** 2
            _, ci = rows_cols(em.prog.vars[val].shape)
            idx = f"_pattern_index({pattern!r})"
            s = f"_gather({s}, {idx}, NB, {rows}, {width})"
            v = (f"_by_row(_gather(_by_direction({v}, NB, K, 1, {ci}), {idx}, NB*K, {rows}, "
                 f"{width}), NB, K, {rows}, {width})")
        return f"_take_argmax_dirs({s}, {v}, K)"
