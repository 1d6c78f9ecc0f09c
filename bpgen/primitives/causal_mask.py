"""``causal_mask``: the scores of keys after the query replaced by ``fill``.
Its argument is an (h·T·N, T) scores matrix (``seqmm`` form ``qk``): the row
(j·T + t)·N + n is query t of sample n and head j, column s key s, so an
entry is masked when s > t.  With fill -inf, softmax over the row gives the
masked keys weight exactly 0.  Its derivative is the same mask with fill 0
(a masked entry does not depend on its argument).

A key-padding mask (``lengths``) fits here: an optional (N, 1) integer
argument, masking s >= lengths[n] as well (n = r mod N), with the same
fill-0 derivative."""
from __future__ import annotations

from ..shapes import dim_code, dim_coeffs
from .base import Primitive, register, tangent_name, wanted

FILLS = ("-inf", "0")


@register
class CausalMask(Primitive):
    name = "causal_mask"
    # rows are (head, step, sample) blocks: with N standing for N·K the step
    # of row r is still (r / N) mod T, so k directions print unchanged
    batch_as_rows = True

    def build(self, g, a: str, steps: int, fill: str = "-inf", base: str = "msk",
              label: str = "", comment: str = "") -> str:
        r, c = g.shape(a)
        if c != steps or dim_coeffs(r)[0] % steps or dim_coeffs(r)[1] or fill not in FILLS:
            raise ValueError(f"causal_mask: {a} {(r, c)} is not a scores matrix of "
                             f"{steps} steps (or fill {fill!r} not in {FILLS})")
        return g.emit(self.name, base, (r, c), (a,), {"steps": steps, "fill": fill},
                      label, comment)

    def vjp(self, g, op, gout, only=None):
        (a,) = op.args
        if not wanted(g, a, only):
            return {}
        return {a: g.causal_mask(gout, op.attrs["steps"], "0", base="d_" + a,
                                 label="δ" + g.vars[a].label)}

    def jvp(self, g, op, t):
        (a,) = op.args
        if a not in t:
            return None
        base, label = tangent_name(g, op)
        return g.causal_mask(t[a], op.attrs["steps"], "0", base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        fill = op.attrs["fill"]
        if latex:
            f = r"-\infty" if fill == "-inf" else "0"
            return rf"\operatorname{{mask}}_{{s > t \to {f}}}({a})"
        return f"causal_mask({a}, {'-∞' if fill == '-inf' else '0'})"

    def numpy(self, em, op, loop):
        t = op.attrs["steps"]
        heads = dim_coeffs(em.shape(op.out, loop)[0])[0] // t
        fill = "-numpy.inf" if op.attrs["fill"] == "-inf" else "0"
        return (f"numpy.where(numpy.repeat(numpy.tile(numpy.triu(numpy.ones(({t}, {t}), "
                f"dtype=bool), 1), ({heads}, 1)), N, axis=0), {fill}, "
                f"{em.acc(op.args[0], loop)})")

    def c(self, em, op, loop):
        em.use("causal_mask")
        r, c = em.shape(op.out, loop)
        fill = "-INFINITY" if op.attrs["fill"] == "-inf" else "0"
        return [f"bpg_causal_mask({dim_code(r)}, {c}, N, {fill}, {em.ptr(op.args[0], loop)}, "
                f"{em.ptr(op.out, loop)});"]
