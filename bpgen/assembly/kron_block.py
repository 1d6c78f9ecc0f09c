"""One block of the Hessian between the parameters (W, b) of layers k <= l:
a sum over samples of Kronecker products, plus for k < l the
commutation-type term that no sum of Kronecker products gives."""
from __future__ import annotations

from dataclasses import dataclass

from ..mathtext import Cat, Eq, Infix, Key, Paren, Sub, Sum, Sym, T
from .base import AssemblyOp, register


@register
@dataclass
class KronBlock(AssemblyOp):
    """H[(p,q), (i,j)] = Σ_n ã_k[n]_p·(ã_l[n]_i·M[n]_qj + J[n]_qi·δz_l[n]_j)

    rows (p, q) = the flat order of (W_k, b_k) (ã_k = [a_(k-1), 1]: the bias
    is the weight of a constant input), columns (i, j) likewise for layer l;
    M = Λ_kl = ∂z_l/∂z_k·Λ_l; J = ∂a_(l-1)/∂z_k only for k < l, and never on
    the columns of b_l.  Written into ``out`` (``ld`` columns) at (r0, c0):
    in NumPy one product over the samples through a 4-D view, in C one
    product per q straight into the rows (p, q) of ``out`` (``tmp``:
    N·(pl+1)·cl elements).  Without J (k = l) the block is the diagonal one
    and is made exactly symmetric: in NumPy averaged with its transpose, in C
    each c x c tile of a pair p <= i computed once (``wtmp``: N·``pc``,
    ``gtmp``: ``pc``·c·c elements) and written at (p, i) and transposed at
    (i, p)."""
    name = "kron_block"
    out: str
    ld: int
    r0: int
    c0: int
    ak: str
    al: str
    m: str
    j: str | None
    delta: str | None
    tmp: str
    rows: str               # the parameters of the rows and columns, for equations
    cols: str
    wtmp: str | None = None  # C, diagonal blocks: the pair weights and tiles of a chunk
    gtmp: str | None = None
    pc: int = 0              # pairs per chunk

    def reads(self):
        return tuple(x for x in (self.ak, self.al, self.m, self.j, self.delta) if x)

    def writes(self):
        return (self.out,)

    def scratch(self):
        # in C: the tiles' buffers (k = l), or the Kronecker rows R_q (k < l)
        return (self.wtmp, self.gtmp) if not self.j else (self.tmp,)

    def sizes(self, asm):
        """(pk + 1, ck, pl + 1, cl)."""
        _, ck, cl = asm.t(self.m).shape
        return asm.t(self.ak).shape[1], ck, asm.t(self.al).shape[1], cl

    def check(self, asm):
        pk1, ck, pl1, cl = self.sizes(asm)
        rows, cols = asm.t(self.out).shape
        assert cols == self.ld and self.r0 + pk1 * ck <= rows and self.c0 + pl1 * cl <= cols
        if not self.j:
            assert self.ak == self.al and self.r0 == self.c0 and self.pc >= 1
            assert asm.t(self.wtmp).shape == ("N", self.pc)
            assert asm.t(self.gtmp).shape == (self.pc * ck * ck,)
        if self.j:
            assert asm.t(self.j).shape == ("N", ck, pl1 - 1)
            assert asm.t(self.delta).shape == ("N", cl)

    def equation(self, asm):
        ak, al, m = (asm.t(x).at("n") for x in (self.ak, self.al, self.m))
        lhs = asm.t(self.out).at(Key(self.rows), Key(self.cols))
        if not self.j:
            dot = Infix("·", r" \cdot ", T(ak), al)
            return Eq(lhs, Sum("n", Infix(" ⊗ ", r" \otimes ", Paren(dot), m)))
        j, d = asm.t(self.j).at("n"), asm.t(self.delta).at("n")

        def prod(*factors):         # a·b, in LaTeX side by side with a thin space
            return Infix("·", r"\, ", *factors)

        inner = Infix(" + ", " + ", prod(Sub(al, "i"), Sub(m, "qj")),
                      prod(Sub(j, "qi"), Sub(d, "j")))
        rhs = Sum("n", Infix("·", " ", Sub(ak, "p"), Paren(inner)))
        # the entry (pq),(ij) of the block; the note is in the text only
        return Eq(Cat(lhs, Sym("_(pq),(ij)", "_{(pq),(ij)}")),
                  Cat(rhs, Sym("  (J-term: W columns only)", "")))

    def numpy(self, asm):
        pk1, ck, pl1, cl = self.sizes(asm)
        r1, c1 = self.r0 + pk1 * ck, self.c0 + pl1 * cl
        view = f"{self.out}[{self.r0}:{r1}, {self.c0}:{c1}].reshape({pk1}, {ck}, {pl1}, {cl})"
        lines = [f"{self.tmp} = ({self.ak}[:, :, None] * {self.al}[:, None, :])"
                 f".reshape(N, -1).T @ {self.m}.reshape(N, -1)",
                 f"{view}[...] = {self.tmp}.reshape({pk1}, {pl1}, {ck}, {cl})"
                 f".transpose(0, 2, 1, 3)"]
        if not self.j:          # the diagonal block: symmetric to the last bit
            b = f"{self.out}[{self.r0}:{r1}, {self.c0}:{c1}]"
            lines.append(f"{b} = ({b} + {b}.T) / 2")
        if self.j:
            cw = self.c0 + (pl1 - 1) * cl
            view = (f"{self.out}[{self.r0}:{r1}, {self.c0}:{cw}]"
                    f".reshape({pk1}, {ck}, {pl1 - 1}, {cl})")
            lines += [f"{self.tmp} = ({self.ak}[:, :, None] * {self.delta}[:, None, :])"
                      f".reshape(N, -1).T @ {self.j}.reshape(N, -1)",
                      f"{view}[...] += {self.tmp}.reshape({pk1}, {cl}, {ck}, {pl1 - 1})"
                      f".transpose(0, 2, 3, 1)"]
        return lines

    def c(self, asm, em):
        pk1, ck, pl1, cl = self.sizes(asm)
        n = em.name
        at = f"{n(self.out)} + {self.r0 * self.ld + self.c0}"
        if not self.j:
            em.use("hess_kron_sym")
            return [f"bpg_hess_kron_sym(N, {pk1}, {ck}, {n(self.ak)}, {n(self.m)}, {at}, "
                    f"{self.ld}, {n(self.wtmp)}, {n(self.gtmp)}, {self.pc});"]
        em.use("hess_kron")
        return [f"bpg_hess_kron(N, {pk1}, {ck}, {pl1}, {cl}, {n(self.ak)}, {n(self.al)}, "
                f"{n(self.m)}, {n(self.j)}, {n(self.delta)}, {at}, {self.ld}, {n(self.tmp)});"]
