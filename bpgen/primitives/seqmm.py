"""``seqmm``: per-sample, per-head block products over the step axis of
time-major sequences (T steps of N rows; F = h·d columns, head j the
columns j·d .. j·d+d-1).  Per sample n and head j, with X_n the (T, F)
matrix of sample n's rows and X_nj its head-j columns, the three forms are

* ``qk``:  S_nj = Q_nj·K_njᵀ, a (T, T) block stored at rows (j·T + t)·N + n
  of the (h·T·N, T) scores matrix (a row per query t, a column per key s);
* ``av``:  O_nj = A_nj·V_nj (T, d), the head-j columns of the (T·N, F) output;
* ``atv``: O_nj = A_njᵀ·V_nj (T, d), likewise.

Each is bilinear and the three are closed under differentiation:
S = qk(Q, K): δQ = av(δS, K), δK = atv(δS, Q);  O = av(A, V): δA = qk(δO, V),
δV = atv(A, δO);  O = atv(A, V): δA = qk(V, δO), δV = av(A, δO).
Attention is softmax over the rows of qk(Q, K)/√d, then av(A, V)."""
from __future__ import annotations

import sympy as sp

from ..shapes import dim_coeffs, seq_dim
from .base import Primitive, register, tangent_name, wanted

#: form -> (einsum of its per-sample blocks, as text, as LaTeX)
FORMS = {  # (X[n,j]: sample n's rows, head j's columns)
    "qk": ("tnjc,snjc->jtns", "{a}[n,j]·{b}[n,j]ᵀ", r"\left({a}\right)_{{nj}} \cdot \left({b}\right)_{{nj}}^{{\top}}"),
    "av": ("jtns,snjc->tnjc", "{a}[n,j]·{b}[n,j]", r"\left({a}\right)_{{nj}} \cdot \left({b}\right)_{{nj}}"),
    "atv": ("jtns,tnjc->snjc", "{a}[n,j]ᵀ·{b}[n,j]", r"\left({a}\right)_{{nj}}^{{\top}} \cdot \left({b}\right)_{{nj}}"),
}


#: multiply-adds of a (sample, head) block from which runtime/seqmm.c hands
#: it to the BLAS (its BPG_SEQMM_MIN); smaller blocks with a constant step
#: count call the always-inlined copy, bpg_seqmm_unrolled
SEQMM_BLAS_MIN = 2048


def _steps(shape) -> int:
    return dim_coeffs(shape[0])[0]


@register
class SeqMM(Primitive):
    name = "seqmm"
    product = False

    def zero_when(self, op, zero: set) -> bool:
        return any(a in zero for a in op.args)      # bilinear

    def build(self, g, a: str, b: str, form: str, steps: int, heads: int,
              base: str = "smm", label: str = "", comment: str = "") -> str:
        sa, sb = g.shape(a), g.shape(b)
        t, h = steps, heads
        seq, scores = seq_dim(t), (seq_dim(h * t), t)
        if form == "qk":
            ok = sa == sb and sa[0] == seq and sa[1] % h == 0
            shape = scores
        else:
            ok = tuple(sa) == scores and sb[0] == seq and sb[1] % h == 0
            shape = (seq, sb[1])
        if form not in FORMS or not ok:
            raise ValueError(f"seqmm {form}: shapes {a}{sa} {b}{sb} for T={t}, h={h}")
        f = sa[1] if form == "qk" else sb[1]
        return g.emit(self.name, base, shape, (a, b),
                      {"form": form, "steps": t, "heads": h, "d": f // h, "f": f},
                      label, comment)

    def _again(self, g, op, form, a, b, **names):
        return g.seqmm(a, b, form, op.attrs["steps"], op.attrs["heads"], **names)

    def vjp(self, g, op, gout, only=None):
        a, b = op.args
        form = op.attrs["form"]
        res = {}
        # (cotangent of a, of b) as (form, first, second) of the rules above
        rules = {"qk": (("av", gout, b), ("atv", gout, a)),
                 "av": (("qk", gout, b), ("atv", a, gout)),
                 "atv": (("qk", b, gout), ("av", a, gout))}[form]
        for arg, (f2, x, y) in zip((a, b), rules):
            if wanted(g, arg, only):
                res[arg] = self._again(g, op, f2, x, y, base="d_" + arg,
                                       label="δ" + g.vars[arg].label)
        return res

    def jvp(self, g, op, t):
        a, b = op.args
        base, label = tangent_name(g, op)
        form = op.attrs["form"]
        both = a in t and b in t
        parts = []
        if a in t:      # R{a ∘ b} = R{a} ∘ b + a ∘ R{b}
            parts.append(self._again(g, op, form, t[a], b, base=base + "_a",
                                     label=label + ("[1]" if both else "")))
        if b in t:
            parts.append(self._again(g, op, form, a, t[b], base=base + "_b",
                                     label=label + ("[2]" if both else "")))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base=base, label=label)

    def equation(self, op, names, latex=False):
        a, b = (names.get(x, x) for x in op.args)
        _, text, tex = FORMS[op.attrs["form"]]
        return (tex if latex else text).format(a=a, b=b)

    # ---- printing: one rule for one direction and for k at once --------------
    def _numpy(self, em, op, loop, nb: str, ka: bool, kb: bool):
        """Batched matrix products (numpy.matmul) over (head, sample,
        direction): every argument as a 5-D view (step, sample, direction,
        head, column) or (head, step, sample, direction, key), with a
        direction axis of 1 where it holds one (broadcast)."""
        at = op.attrs
        t, h, d, f = at["steps"], at["heads"], at["d"], at["f"]
        a, b = (em.acc(x, loop) for x in op.args)
        ksz = ("K" if ka else "1", "K" if kb else "1")

        def seq(x, kk, last_two):        # (T·N·K, F) -> (h, n, k, ...) with the given last two
            order = "3, 1, 2, 0, 4" if last_two == "tc" else "3, 1, 2, 4, 0"
            return f"{x}.reshape({t}, {nb}, {kk}, {h}, {d}).transpose({order})"

        def scores(x, kk, transposed):   # (h·T·N·K, T) -> (h, n, k, t, s) or (h, n, k, s, t)
            order = "0, 2, 3, 4, 1" if transposed else "0, 2, 3, 1, 4"
            return f"{x}.reshape({h}, {t}, {nb}, {kk}, {t}).transpose({order})"

        form = at["form"]
        if form == "qk":        # (h, n, k, t, s) -> rows (h, t, n, k)
            prod = f"numpy.matmul({seq(a, ksz[0], 'tc')}, {seq(b, ksz[1], 'ct')})"
            return f"{prod}.transpose(0, 3, 1, 2, 4).reshape(-1, {t})"
        prod = (f"numpy.matmul({scores(a, ksz[0], form == 'atv')}, "
                f"{seq(b, ksz[1], 'tc')})")
        return f"{prod}.transpose(3, 1, 2, 0, 4).reshape(-1, {f})"

    def numpy(self, em, op, loop):
        return self._numpy(em, op, loop, "N", False, False)

    def numpy_batched(self, em, op, loop):
        ka, kb = (em.is_batched(x) for x in op.args)
        return self._numpy(em, op, loop, "NB", ka, kb)

    def _c(self, em, op, loop, nb: str, k: str, ka: bool, kb: bool):
        at = op.attrs
        em.use("seqmm")
        a, b = op.args
        form = ("qk", "av", "atv").index(at["form"])      # runtime/seqmm.c's numbering
        steps = at["steps"]
        # blocks below the BLAS size with constant sizes: inlined, their loops unrolled
        small = isinstance(steps, int) and steps * steps * at["d"] < SEQMM_BLAS_MIN
        fn = "bpg_seqmm_unrolled" if small else "bpg_seqmm"
        # α: 1, or a constant scale the C plan folds into the product
        # (bpgen.passes.fold_scale: the emitter sets attrs["alpha"])
        alpha = repr(float(at.get("alpha", 1)))
        return [f"{fn}({form}, {nb}, {steps}, {at['heads']}, {at['d']}, {k}, "
                f"{int(ka)}, {int(kb)}, {alpha}, {em.ptr(a, loop)}, {em.ptr(b, loop)}, "
                f"{em.ptr(op.out, loop)});  /* {at['form']} */"]

    def c(self, em, op, loop):
        return self._c(em, op, loop, "N", "1", False, False)

    def c_batched(self, em, op, loop):
        ka, kb = (em.is_batched(x) for x in op.args)
        return self._c(em, op, loop, "NB", "K", ka, kb)

    def batched_rule(self, op, batched):
        return any(a in batched for a in op.args)
