"""The chain from a layer's pre-activation z_k to a later layer's input:
J_(k→l) = ∂a_(l-1)/∂z_k and Z_(k→l) = ∂z_l/∂z_k = J_(k→l)·W_l, per sample.
J starts as diag(f'(z_k)) and continues as Z_(k→l-1) ⊙ f'(z_(l-1)) (every
column scaled)."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import Eq, Fn, Infix
from .base import AssemblyOp, register


@register
@dataclass
class ChainStart(AssemblyOp):
    """J[n] = diag(f'(z_k)[n]), (N, u, u)."""
    name = "chain_start"
    out: str
    d1: str

    def reads(self):
        return (self.d1,)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        _, u, u2 = asm.t(self.out).shape
        assert u == u2 and asm.t(self.d1).shape == ("N", u)

    def equation(self, asm):
        o, d = asm.t(self.out), asm.t(self.d1)
        return Eq(o.at("n"), Fn("diag", d.at("n")))

    def numpy(self, asm):
        u = asm.t(self.d1).shape[1]
        return [f"{self.out} = numpy.zeros((N, {u}, {u}), dtype=DTYPE)",
                f"{self.out}.reshape(N, -1)[:, ::{u + 1}] = {self.d1}"]

    def c(self, asm, em):
        em.use("hess_chain_start")
        u = asm.t(self.d1).shape[1]
        return [f"bpg_hess_chain_start(N, {u}, {em.name(self.d1)}, {em.name(self.out)});"]


@register
@dataclass
class ScaleColumns(AssemblyOp):
    """J[n] = Z[n]·diag(f'(z_(l-1))[n]): (N, c, u) with every column scaled."""
    name = "scale_columns"
    out: str
    src: str
    d1: str

    def reads(self):
        return (self.src, self.d1)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        _, c, u = asm.t(self.out).shape
        assert asm.t(self.src).shape == ("N", c, u) and asm.t(self.d1).shape == ("N", u)

    def equation(self, asm):
        o, s, d = asm.t(self.out), asm.t(self.src), asm.t(self.d1)
        return Eq(o.at("n"), Infix("·", r" \cdot ", s.at("n"), Fn("diag", d.at("n"))))

    def numpy(self, asm):
        return [f"{self.out} = {self.src} * {self.d1}[:, None, :]"]

    def c(self, asm, em):
        em.use("hess_scale_columns")
        _, c, u = asm.t(self.out).shape
        n = em.name
        return [f"bpg_hess_scale_columns(N, {c}, {u}, {n(self.src)}, {n(self.d1)}, "
                f"{n(self.out)});"]


@register
@dataclass
class SharedProduct(AssemblyOp):
    """Z[n] = J[n]·W for every sample: one product (N·c, u)·(u, v)."""
    name = "shared_product"
    out: str
    src: str
    w: str

    def reads(self):
        return (self.src, self.w)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        _, c, v = asm.t(self.out).shape
        _, c2, u = asm.t(self.src).shape
        assert c == c2 and asm.t(self.w).shape == (u, v)

    def equation(self, asm):
        o, s, w = asm.t(self.out), asm.t(self.src), asm.t(self.w)
        return Eq(o.at("n"), Infix("·", r" \cdot ", s.at("n"), w.sym))

    def numpy(self, asm):
        _, c, v = asm.t(self.out).shape
        u = asm.t(self.src).shape[2]
        return [f"{self.out} = ({self.src}.reshape(-1, {u}) @ {self.w}).reshape(N, {c}, {v})"]

    def c(self, asm, em):
        em.use("gemm_nn")
        _, c, v = asm.t(self.out).shape
        u = asm.t(self.src).shape[2]
        n = em.name
        return [f"bpg_gemm_nn({c}*N, {v}, {u}, {n(self.src)}, {n(self.w)}, {n(self.out)});"]
