"""A per-sample matrix product: C[n] = A[n]·B[n] (the cross-layer curvature
Λ_kl = Z_(k→l)·Λ_l)."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import Eq, Infix
from .base import AssemblyOp, register


@register
@dataclass
class SampleProduct(AssemblyOp):
    name = "sample_product"
    out: str
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        _, m, n = asm.t(self.out).shape
        _, m2, k = asm.t(self.a).shape
        assert m == m2 and asm.t(self.b).shape == ("N", k, n)

    def equation(self, asm):
        o, a, b = asm.t(self.out), asm.t(self.a), asm.t(self.b)
        return Eq(o.at("n"), Infix("·", r" \cdot ", a.at("n"), b.at("n")))

    def numpy(self, asm):
        return [f"{self.out} = {self.a} @ {self.b}"]

    def c(self, asm, em):
        em.use("gemm_nn")
        _, m, nc = asm.t(self.out).shape
        k = asm.t(self.a).shape[2]
        return ["for (int64_t n = 0; n < N; n++)",
                f"    bpg_gemm_nn({m}, {nc}, {k}, {em.name(self.a)} + n*{m * k}, "
                f"{em.name(self.b)} + n*{k * nc}, {em.name(self.out)} + n*{m * nc});"]
