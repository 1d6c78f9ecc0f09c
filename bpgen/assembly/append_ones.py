"""ã = [a, 1]: a layer's input with a constant 1 appended, so that the bias
is the weight of that input and a layer's (W, b) block is one Kronecker
block (the flat order puts b right after W)."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import Eq, Infix, Paren
from .base import AssemblyOp, register


@register
@dataclass
class AppendOnes(AssemblyOp):
    name = "append_ones"
    out: str
    src: str

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        n, p1 = asm.t(self.out).shape
        assert asm.t(self.src).shape == ("N", p1 - 1)

    def equation(self, asm):
        o, s = asm.t(self.out), asm.t(self.src)
        return Eq(o.at("n"), Paren(Infix(", ", ", ", s.at("n"), "1"), brackets="[]"))

    def numpy(self, asm):
        p = asm.t(self.src).shape[1]
        return [f"{self.out} = numpy.empty((N, {p + 1}), dtype=DTYPE)",
                f"{self.out}[:, :{p}] = {self.src}",
                f"{self.out}[:, {p}] = 1"]

    def c(self, asm, em):
        em.use("hess_ones")
        p = asm.t(self.src).shape[1]
        return [f"bpg_hess_ones(N, {p}, {em.name(self.src)}, {em.name(self.out)});"]
