"""Λ_out: the per-sample curvature of the loss w.r.t. the network output."""
from __future__ import annotations

from dataclasses import dataclass

from ..losses import CURVATURE_FORMS
from ..mathtext import Eq, Fn, Infix, Paren, T
from .base import AssemblyOp, register


@register
@dataclass
class LossCurvature(AssemblyOp):
    """Λ_out[n] = (diag(p) - pᵀ·p) / N for the form ``"softmax"`` (p the
    probabilities), diag(ℓ''(o)) / N for the form ``"diagonal"`` (the
    elementwise losses): the loss's ``curvature_form``."""
    name = "loss_curvature"
    out: str
    src: str            # p, or ℓ''(o): (N, K)
    form: str           # "softmax" or "diagonal" (bpgen.losses.CURVATURE_FORMS)

    @property
    def softmax(self) -> bool:
        return self.form == "softmax"

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        assert self.form in CURVATURE_FORMS
        n, k, k2 = asm.t(self.out).shape
        assert asm.t(self.src).shape == ("N", k) and k == k2

    def equation(self, asm):
        o, p = asm.t(self.out), asm.t(self.src).at("n")
        lam = Fn("diag", p)
        if self.softmax:
            lam = Paren(Infix(" - ", " - ", lam, Infix("·", r" \cdot ", T(p), p)))
        return Eq(o.at("n"), Infix(" / ", " / ", lam, "N"))

    def numpy(self, asm):
        k = asm.t(self.out).shape[1]
        if self.softmax:
            return [f"{self.out} = {self.src}[:, :, None] * ({self.src}[:, None, :] / -N)",
                    f"{self.out}.reshape(N, -1)[:, ::{k + 1}] += {self.src} / N"]
        return [f"{self.out} = numpy.zeros((N, {k}, {k}), dtype=DTYPE)",
                f"{self.out}.reshape(N, -1)[:, ::{k + 1}] = {self.src} / N"]

    def c(self, asm, em):
        em.use("hess_loss")
        k = asm.t(self.out).shape[1]
        return [f"bpg_hess_loss(N, {k}, {em.name(self.src)}, {int(self.softmax)}, "
                f"{em.name(self.out)});"]
