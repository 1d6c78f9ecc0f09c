"""Λ_k: the curvature w.r.t. a layer's pre-activation, one step of the
backward recursion Λ_k = D_k·W·Λ_(k+1)·Wᵀ·D_k + diag(f''(z_k) ⊙ δa_k)."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import Eq, Fn, Infix, T
from .base import AssemblyOp, register


@register
@dataclass
class Sandwich(AssemblyOp):
    """``out`` (N, u, u) from ``nxt`` (N, v, v) through the weight ``w`` (u, v)
    of the next layer (None: ``nxt`` is the output's Λ, u = v), with
    D = diag(f'(z)) and the residual f''(z) ⊙ δa on the diagonal; averaged
    with its transpose so that it is symmetric to the last bit.  ``tmp``
    holds 2·N·u·v elements."""
    name = "sandwich"
    out: str
    nxt: str
    w: str | None
    d1: str
    d2: str
    q: str
    tmp: str

    def reads(self):
        return tuple(x for x in (self.nxt, self.w, self.d1, self.d2, self.q) if x)

    def writes(self):
        return (self.out,)

    def scratch(self):
        return (self.tmp,)

    def check(self, asm):
        _, u, u2 = asm.t(self.out).shape
        _, v, v2 = asm.t(self.nxt).shape
        assert u == u2 and v == v2
        assert asm.t(self.w).shape == (u, v) if self.w else u == v
        for name in (self.d1, self.d2, self.q):
            assert asm.t(name).shape == ("N", u), name

    def equation(self, asm):
        o, m = asm.t(self.out), asm.t(self.nxt)
        d1, d2, q = (asm.t(x) for x in (self.d1, self.d2, self.q))
        d = Fn("diag", d1.at("n"))
        mid = [m.at("n")]
        if self.w:
            w = asm.t(self.w).sym
            mid = [w, *mid, T(w)]
        residual = Fn("diag", Infix(" ⊙ ", r" \odot ", d2.at("n"), q.at("n")))
        return Eq(o.at("n"), Infix(" + ", " + ", Infix("·", r" \cdot ", d, *mid, d), residual))

    def numpy(self, asm):
        u = asm.t(self.out).shape[1]
        v = asm.t(self.nxt).shape[1]
        o = self.out
        if self.w:
            lines = ["# W·Λ·Wᵀ = (Λ·Wᵀ)ᵀ·Wᵀ (Λ symmetric): two products over all samples",
                     f"{self.tmp} = ({self.nxt}.reshape(-1, {v}) @ {self.w}.T)"
                     f".reshape(N, {v}, {u})",
                     f"{o} = (numpy.ascontiguousarray({self.tmp}.transpose(0, 2, 1))"
                     f".reshape(-1, {v}) @ {self.w}.T).reshape(N, {u}, {u})"]
        else:
            lines = [f"{o} = {self.nxt}.copy()"]
        return lines + [f"{o} *= {self.d1}[:, :, None]",
                        f"{o} *= {self.d1}[:, None, :]",
                        f"{o}.reshape(N, -1)[:, ::{u + 1}] += {self.d2} * {self.q}",
                        f"{o} = ({o} + {o}.transpose(0, 2, 1)) / 2  # symmetric to the last bit"]

    def c(self, asm, em):
        u = asm.t(self.out).shape[1]
        v = asm.t(self.nxt).shape[1]
        em.use("hess_scale")
        n = em.name
        scale = (f"bpg_hess_scale(N, {u}, {n(self.d1)}, {n(self.d2)}, {n(self.q)}, "
                 f"{n(self.out)});")
        if not self.w:
            return [f"memcpy({n(self.out)}, {n(self.nxt)}, sizeof(real)*(size_t)({u * u}*N));",
                    scale]
        em.use("gemm_nt")
        em.use("hess_transpose")
        return ["/* T = Λ·Wᵀ, then W·Λ·Wᵀ = (per-sample Tᵀ)·Wᵀ: two products over all samples */",
                f"bpg_gemm_nt({v}*N, {u}, {v}, {n(self.nxt)}, {n(self.w)}, {n(self.tmp)});",
                f"bpg_hess_transpose(N, {v}, {u}, {n(self.tmp)}, {n(self.tmp)} + {u * v}*N);",
                f"bpg_gemm_nt({u}*N, {u}, {v}, {n(self.tmp)} + {u * v}*N, {n(self.w)}, "
                f"{n(self.out)});",
                scale]
