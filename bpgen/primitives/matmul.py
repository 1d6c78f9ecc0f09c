"""``matmul``: C = op(A)·op(B), op the identity or the transpose."""
from __future__ import annotations

import sympy as sp

from ..shapes import dim_code
from .base import Primitive, register, tangent_name, wanted


@register
class MatMul(Primitive):
    name = "matmul"
    product = True

    def zero_when(self, op, zero: set) -> bool:
        # bilinear; added into its result (attrs["acc"]): that is not zero
        return not op.attrs.get("acc") and any(a in zero for a in op.args)

    def build(self, g, a: str, b: str, ta: bool = False, tb: bool = False,
              base: str = "mm", label: str = "", comment: str = "") -> str:
        sa, sb = g.shape(a), g.shape(b)
        m, k1 = (sa[1], sa[0]) if ta else sa
        k2, n = (sb[1], sb[0]) if tb else sb
        if k1 != k2:
            raise ValueError(f"matmul shape mismatch: {a}{sa} {b}{sb} ta={ta} tb={tb}")
        return g.emit(self.name, base, (m, n), (a, b), {"ta": ta, "tb": tb}, label, comment)

    def vjp(self, g, op, gout, only=None):
        a, b = op.args
        ta, tb = op.attrs["ta"], op.attrs["tb"]
        res = {}
        la, lb = "δ" + g.vars[a].label, "δ" + g.vars[b].label
        if wanted(g, a, only):
            # C = A B -> dA = dC Bᵀ ; C = Aᵀ B -> dA = B dCᵀ
            if not ta:
                res[a] = g.matmul(gout, b, False, not tb, base="d_" + a, label=la)
            else:
                res[a] = g.matmul(b, gout, tb, True, base="d_" + a, label=la)
        if wanted(g, b, only):
            # C = A B -> dB = Aᵀ dC ; C = A Bᵀ -> dB = dCᵀ A
            if not tb:
                res[b] = g.matmul(a, gout, not ta, False, base="d_" + b, label=lb)
            else:
                res[b] = g.matmul(gout, a, True, ta, base="d_" + b, label=lb)
        return res

    def jvp(self, g, op, t):
        a, b = op.args
        ta, tb = op.attrs["ta"], op.attrs["tb"]
        base, label = tangent_name(g, op)
        parts = []
        both = a in t and b in t
        if a in t:      # R{A B} = R{A} B + A R{B}
            parts.append(g.matmul(t[a], b, ta, tb, base=base + "_a",
                                  label=label + ("[1]" if both else "")))
        if b in t:
            parts.append(g.matmul(a, t[b], ta, tb, base=base + "_b",
                                  label=label + ("[2]" if both else "")))
        if not parts:
            return None
        return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base=base, label=label)

    def equation(self, op, names, latex=False):
        a, b = (names.get(x, x) for x in op.args)
        if latex:
            a = f"{{{a}}}^{{\\top}}" if op.attrs["ta"] else a
            b = f"{{{b}}}^{{\\top}}" if op.attrs["tb"] else b
            return f"{a} \\cdot {b}"
        ta = "ᵀ" if op.attrs["ta"] else ""
        tb = "ᵀ" if op.attrs["tb"] else ""
        return f"{a}{ta}·{b}{tb}"

    def numpy(self, em, op, loop):
        a, b = op.args
        a = f"{em.acc(a, loop)}{'.T' if op.attrs['ta'] else ''}"
        b = f"{em.acc(b, loop)}{'.T' if op.attrs['tb'] else ''}"
        into = em.into(op, loop)
        if into is None:
            return f"{a} @ {b}"
        # numpy.dot: the same product of 2-D arrays, called faster than
        # numpy.matmul; dst is C-contiguous, as dot requires
        dst, bind = into
        return [f"{op.out} = numpy.dot({a}, {b}, out={dst})" if bind
                else f"numpy.dot({a}, {b}, out={dst})"]

    def c(self, em, op, loop):
        a, b = op.args
        ta, tb = op.attrs["ta"], op.attrs["tb"]
        r, c = em.shape(op.out, loop)
        sa = em.shape(a, loop)
        k = sa[0] if ta else sa[1]
        kind = ("t" if ta else "n") + ("t" if tb else "n")
        # attrs["acc"]: added into the result (C backend: bpgen.passes.accumulate)
        acc = "_acc" if op.attrs.get("acc") else ""
        if loop is None and not acc and op.out in getattr(em, "split", ()):
            acc = "_out"    # a weight gradient a split call's slices make together
        em.use(f"gemm_{kind}{acc}")
        return [f"bpg_gemm_{kind}{acc}({dim_code(r)}, {dim_code(c)}, {dim_code(k)}, "
                f"{em.ptr(a, loop)}, {em.ptr(b, loop)}, {em.ptr(op.out, loop)});"]

    def c_batched(self, em, op, loop):
        """k directions: the product of a batched (tangent) factor and a
        fixed one as one product k times larger.  A·Bᵀ-type products over
        N·K rows as they are; A·B_d for the K directions of B side by side
        (its K·n columns); A_dᵀ·B over the K directions of A side by side
        gives the directions one below the other (moved to columns after);
        A·B_dᵀ takes B's directions one below the other (moved before)."""
        a, b = op.args
        ta, tb = op.attrs["ta"], op.attrs["tb"]
        ba, bb = em.is_batched(a), em.is_batched(b)
        out = em.ptr(op.out, loop)
        if ba and not bb and not ta:
            return self.c(em, op, loop)
        if bb and not ba and not tb:
            ra, ca = em.lshape(a, loop)
            m, k = (ca, ra) if ta else (ra, ca)
            kind = ("t" if ta else "n") + "n"
            em.use(f"gemm_{kind}")
            return [f"bpg_gemm_{kind}({m}, K*{em.lshape(b, loop)[1]}, {k}, "
                    f"{em.ptr(a, loop)}, {em.ptr(b, loop)}, {out});"]
        if ba and not bb and ta and not tb:
            ra, ca = em.lshape(a, loop)
            n = em.lshape(b, loop)[1]
            tmp = em.scratch(ca, n)
            em.use("gemm_tn")
            em.use("dirs_to_cols")
            return [f"bpg_gemm_tn(K*{ca}, {n}, {ra}, {em.ptr(a, loop)}, {em.ptr(b, loop)}, "
                    f"{tmp});",
                    f"bpg_dirs_to_cols(K, {ca}, {n}, {tmp}, {ca}*{n}, {out});"]
        if bb and not ba and tb and not ta:
            ra, ca = em.lshape(a, loop)
            rb, cb = em.lshape(b, loop)
            lines, bd = em.directions_first(b, loop)
            em.use("gemm_nt")
            return lines + [f"bpg_gemm_nt({ra}, K*{rb}, {cb}, {em.ptr(a, loop)}, {bd}, "
                            f"{out});"]
        raise NotImplementedError("matmul: no C rule for k directions of this form")

    def numpy_batched(self, em, op, loop):
        """k directions: the same four forms as ``c_batched``."""
        a, b = op.args
        ta, tb = op.attrs["ta"], op.attrs["tb"]
        ba, bb = em.is_batched(a), em.is_batched(b)
        A, B = em.acc(a, loop), em.acc(b, loop)
        (ra, ca), (rb, cb) = em.lshape(a, loop), em.lshape(b, loop)
        if ba and not bb and not ta:
            return self.numpy(em, op, loop)
        if bb and not ba and not tb:       # A·[B_1 … B_K]
            m = ca if ta else ra
            return f"({A}{'.T' if ta else ''} @ {B}.reshape({rb}, K*{cb})).reshape({m}*K, {cb})"
        if ba and not bb and ta and not tb:  # [A_1 … A_K]ᵀ·B: directions one below the other
            return (f"({A}.reshape({ra}, K*{ca}).T @ {B}).reshape(K, {ca}, {cb})"
                    f".transpose(1, 0, 2).reshape({ca}*K, {cb})")
        if bb and not ba and tb and not ta:  # A·[B_1ᵀ … B_Kᵀ]
            return (f"({A} @ {B}.reshape({rb}, K, {cb}).transpose(1, 0, 2)"
                    f".reshape(K*{rb}, {cb}).T).reshape({ra}*K, {rb})")
        raise NotImplementedError("matmul: no NumPy rule for k directions of this form")

    def batched_rule(self, op, batched) -> bool:
        # the four forms above: one factor batched, not both transposed
        a, b = op.args
        return (a in batched) != (b in batched) and not (op.attrs["ta"] and op.attrs["tb"])
