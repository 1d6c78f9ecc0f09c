"""The exact Hessian is symmetric: an off-diagonal block is computed once and
mirrored (diagonal blocks are made symmetric by their KronBlock); and the
l2 term on a regularised weight's diagonal."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import At, Eq, Infix, Key, Paren, Sym, T
from .base import AssemblyOp, register


@register
@dataclass
class Mirror(AssemblyOp):
    """out[c0:c0+cols, r0:r0+rows] = out[r0:r0+rows, c0:c0+cols]ᵀ."""
    name = "mirror"
    out: str
    r0: int
    c0: int
    nrows: int
    ncols: int
    rows: str
    cols: str

    def reads(self):
        return (self.out,)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        n = asm.t(self.out).shape[0]
        assert self.r0 + self.nrows <= self.c0 and self.c0 + self.ncols <= n

    def equation(self, asm):
        o, rows, cols = asm.t(self.out).sym, Key(self.rows), Key(self.cols)
        return Eq(At(o, cols, rows), T(At(o, rows, cols), grouped=False))

    def numpy(self, asm):
        r, c = (f"{self.r0}:{self.r0 + self.nrows}", f"{self.c0}:{self.c0 + self.ncols}")
        return [f"{self.out}[{c}, {r}] = {self.out}[{r}, {c}].T"]

    def c(self, asm, em):
        em.use("hess_mirror")
        ld = asm.t(self.out).shape[1]
        return [f"bpg_hess_mirror({self.nrows}, {self.ncols}, {em.name(self.out)} + "
                f"{self.r0 * ld + self.c0}, {em.name(self.out)} + {self.c0 * ld + self.r0}, {ld});"]


@register
@dataclass
class AddL2(AssemblyOp):
    """out[i, i] += l2 for the flat indices start <= i < stop (a regularised
    weight's own diagonal)."""
    name = "add_l2"
    out: str
    start: int
    stop: int
    l2: float
    key: str

    def reads(self):
        return (self.out,)

    def writes(self):
        return (self.out,)

    def check(self, asm):
        assert 0 <= self.start < self.stop <= asm.t(self.out).shape[0]

    def equation(self, asm):
        key, lam = Key(self.key), Sym("λ", r"\lambda")
        note = Paren(Eq(lam, repr(self.l2)), big=False)
        rhs = Infix("  ", r" \quad ", Infix(" ", " ", lam, "I"), note)
        return Infix(" += ", r" \mathrel{+}= ", asm.t(self.out).at(key, key), rhs)

    def numpy(self, asm):
        ld = asm.t(self.out).shape[1]
        return [f"{self.out}.reshape(-1)[{self.start * (ld + 1)}:{self.stop * (ld + 1)}:{ld + 1}]"
                f" += {self.l2!r}"]

    def c(self, asm, em):
        ld = asm.t(self.out).shape[1]
        return [f"for (int64_t i = {self.start}; i < {self.stop}; i++) "
                f"{em.name(self.out)}[i*{ld + 1}] += (real){self.l2!r};"]
