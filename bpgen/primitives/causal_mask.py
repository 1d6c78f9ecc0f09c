"""``causal_mask``: the scores of masked keys replaced by ``fill``.
Its first argument is an (h·T·N, T) scores matrix (``seqmm`` form ``qk``):
the row (j·T + t)·N + n is query t of sample n and head j, column s key s.
An entry is masked when the key comes after the query (s > t, ``causal``)
or, with a second argument M, the (T·N, 1) mask of real steps (1 at a real
step, 0 at padding: ``g.mask``, made from ``lengths``), when the key is
padding: M[s·N + n] = 0 (key-padding mask).  With fill -inf, softmax over
the row gives the masked keys weight exactly 0 (a row always keeps key 0:
lengths >= 1).  M is data, not differentiable; the derivative in the
scores is the same mask with fill 0 (a masked entry does not depend on its
argument), for the causal and the key mask alike.

With k tangent directions at once (``bpg_hessian_columns``) the scores'
rows are (head, step, sample, direction) blocks: with N standing for N·K
the step of row r is still (r / N) mod T, and its sample is (r mod N) / K
(M itself, fixed, has the batch NB = N / K)."""
from __future__ import annotations

from ..shapes import dim_code, dim_coeffs, seq_dim
from .base import Primitive, register, tangent_name, wanted

FILLS = ("-inf", "0")


@register
class CausalMask(Primitive):
    name = "causal_mask"
    # rows are (head, step, sample) blocks: see the module docstring for
    # k directions (the rules below print them; M is never batched)
    batch_as_rows = True
    # runtime/causal_mask.c allows out == a (then writes only the fills):
    # the scores masked in place when nothing reads them afterwards
    c_in_place = True

    def zero_when(self, op, zero: set) -> bool:
        return op.args[0] in zero and op.attrs["fill"] == "0"

    def build(self, g, a: str, steps: int, fill: str = "-inf", keys: str | None = None,
              causal: bool = True, base: str = "msk", label: str = "",
              comment: str = "") -> str:
        r, c = g.shape(a)
        if c != steps or dim_coeffs(r)[0] % steps or dim_coeffs(r)[1] or fill not in FILLS:
            raise ValueError(f"causal_mask: {a} {(r, c)} is not a scores matrix of "
                             f"{steps} steps (or fill {fill!r} not in {FILLS})")
        if keys is not None and tuple(g.shape(keys)) != (seq_dim(steps), 1):
            raise ValueError(f"causal_mask: the key mask {keys} {g.shape(keys)} is not "
                             f"({seq_dim(steps)}, 1)")
        if keys is None and not causal:
            raise ValueError("causal_mask: nothing to mask (not causal, no key mask)")
        args = (a,) if keys is None else (a, keys)
        return g.emit(self.name, base, (r, c), args,
                      {"steps": steps, "fill": fill, "causal": causal}, label, comment)

    def _again(self, g, op, a, **names):
        keys = op.args[1] if len(op.args) > 1 else None
        return g.causal_mask(a, op.attrs["steps"], "0", keys=keys,
                             causal=op.attrs.get("causal", True), **names)

    def vjp(self, g, op, gout, only=None):
        a = op.args[0]
        if not wanted(g, a, only):
            return {}
        return {a: self._again(g, op, gout, base="d_" + a, label="δ" + g.vars[a].label)}

    def jvp(self, g, op, t):
        a = op.args[0]
        if a not in t:
            return None
        base, label = tangent_name(g, op)
        return self._again(g, op, t[a], base=base, label=label)

    def equation(self, op, names, latex=False):
        a = names.get(op.args[0], op.args[0])
        m = names.get(op.args[1], op.args[1]) if len(op.args) > 1 else None
        causal = op.attrs.get("causal", True)
        fill = op.attrs["fill"]
        if latex:
            f = r"-\infty" if fill == "-inf" else "0"
            where = ([r"s > t"] if causal else []) + ([rf"{m}_s = 0"] if m else [])
            cond = r" \vee ".join(where)
            return rf"\operatorname{{mask}}_{{{cond} \to {f}}}({a})"
        f = "-∞" if fill == "-inf" else "0"
        if m is None:
            return f"causal_mask({a}, {f})"
        return f"{'causal_mask' if causal else 'key_mask'}({a}, {m}, {f})"

    # ---- printing: one direction (N the batch, K = 1) or k at once (N = NB·K)
    def _numpy(self, em, op, loop, nb: str, k: str):
        t = op.attrs["steps"]
        heads = dim_coeffs(em.shape(op.out, loop)[0])[0] // t
        fill = "-numpy.inf" if op.attrs["fill"] == "-inf" else "0"
        conds = []
        if op.attrs.get("causal", True):     # s > t, for every (head, step, sample) row
            conds.append(f"numpy.repeat(numpy.tile(numpy.triu(numpy.ones(({t}, {t}), "
                         f"dtype=bool), 1), ({heads}, 1)), N, axis=0)")
        if len(op.args) > 1:                 # M[s·NB + n] == 0, row (j·T + t)·N + n·K + k
            keys = f"({em.acc(op.args[1], loop)}.reshape({t}, {nb}).T == 0)"
            if k != "1":
                keys = f"numpy.repeat({keys}, {k}, axis=0)"
            conds.append(f"numpy.tile({keys}, ({heads * t}, 1))")
        return f"numpy.where({' | '.join(conds)}, {fill}, {em.acc(op.args[0], loop)})"

    def numpy(self, em, op, loop):
        return self._numpy(em, op, loop, "N", "1")

    def numpy_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("causal_mask: fixed scores in the batched pass")
        return self._numpy(em, op, loop, "NB", "K")

    def _c(self, em, op, loop, k: str, rowmax: str | None = None):
        em.use("causal_mask" if rowmax is None else "causal_mask_max")
        r, c = em.shape(op.out, loop)
        fill = "-INFINITY" if op.attrs["fill"] == "-inf" else "0"
        keys = em.ptr(op.args[1], loop) if len(op.args) > 1 else "NULL"
        args = (f"{dim_code(r)}, {c}, N, {k}, {int(op.attrs.get('causal', True))}, {keys}, "
                f"{fill}, {em.ptr(op.args[0], loop)}, {em.ptr(op.out, loop)}")
        if rowmax is None:
            return [f"bpg_causal_mask({args});"]
        return [f"bpg_causal_mask_max({args}, {em.ptr(rowmax, loop)});"]

    def c(self, em, op, loop):
        return self._c(em, op, loop, "1")

    def c_with_rowmax(self, em, op, rowmax: str):
        """The mask and ``rowmax`` = rowmax(its result) in one pass over the
        rows (bpgen.passes.mask_max)."""
        return self._c(em, op, None, "1", rowmax)

    def c_batched(self, em, op, loop):
        if not em.is_batched(op.args[0]):
            raise NotImplementedError("causal_mask: fixed scores in the batched pass")
        return self._c(em, op, loop, "K")

    def batched_rule(self, op, batched):
        return op.args[0] in batched
