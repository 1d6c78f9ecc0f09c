"""``prev``: a loop variable at the previous iteration (zero at the first):
how recurrent state is carried.  Its derivative rules are loop-wise (its
source is defined after it in the loop), so the graph walkers call them at
the right moments: :meth:`Prev.state_tangent` (forward mode: a ``prev`` of
the tangent), :meth:`Prev.open_carry` and :meth:`Prev.close_carry` (reverse
mode: a ``prev`` of the cotangent, carried through the reversed loop)."""
from __future__ import annotations

from .base import Primitive, register, tangent_name


@register
class Prev(Primitive):
    name = "prev"
    is_view = True
    state_read = True
    batch_as_rows = True

    def build(self, g, shape: tuple, base: str = "prev", label: str = "") -> str:
        if g.loop is None:
            raise ValueError("state() outside a loop")
        out = g.emit(self.name, base, tuple(shape), (), {}, label)
        g.vars[out].differentiable = True
        return out

    def state_tangent(self, g, op, t: dict, pending: dict) -> None:
        """Forward rule: the tangent of a state read is a state read of its
        source's tangent.  The source comes later in the loop: the read is
        recorded in ``pending`` ({source: [reads]}) and the walker binds it
        (``g.bind_state``) once the source's tangent is known."""
        base, label = tangent_name(g, op)
        state = g.state(g.shape(op.out), base=base, label=label)
        g.vars[state].differentiable = False
        t[op.out] = state
        if op.args:
            pending.setdefault(op.args[0], []).append(state)

    def open_carry(self, g, op, info: dict, cot: dict):
        """Reverse rule, first half, before the reversed loop's body: the
        source's cotangent that arrives from the iteration before (the next
        time step of the forward loop ``info``), a state read of the reversed
        loop added to the source's cotangent parts.  None when the source
        carries no derivative."""
        src = op.args[0]
        if not g.vars[src].differentiable:
            return None
        carry = g.state(g.shape(src), base="carry_" + src,
                        label="δ" + g.vars[src].label
                        + ("(from t-1)" if info["reverse"] else "(from t+1)"))
        cot.setdefault(src, []).append(carry)
        return carry

    def close_carry(self, g, op, carry: str, cot: dict, info: dict, truncate, total) -> None:
        """Reverse rule, second half, where the reversed body reaches this
        read: ``carry`` is bound to the read's total cotangent (``total``:
        the walker's sum of parts), cut every ``truncate`` steps; a constant
        zero when no gradient reaches the state."""
        d = None
        parts = cot.pop(op.out, [])
        if parts:
            d = total(g, op.out, parts)
            if truncate and info["reverse"] and g.cut_mask is not None:
                # per sample: a reversed loop's boundaries count from the
                # sample's last real step, which the cut mask (made from the
                # lengths at call time) marks
                d = g.map(g.sym(d) * g.sym(g.cut_mask), base="d_" + op.out + "_cut",
                          label="cut(" + g.vars[d].label + ")",
                          comment="truncated BPTT: cut where this sample's boundary is")
            elif truncate:
                d = g.cut(d, truncate, info["reverse"], base="d_" + op.out + "_cut",
                          label="cut(" + g.vars[d].label + ")")
        g.bind_state(carry, d)

    def equation(self, op, names, latex=False):
        if not op.args:
            return "0"
        a = names.get(op.args[0], op.args[0])
        if latex:
            return rf"{a} \text{{ of the previous iteration (0 at the first)}}"
        return f"{a} of the previous iteration (0 at the first)"

    def numpy(self, em, op, loop):
        (src,) = op.args
        out = op.out
        zero = (f"{em.acc(out, loop)} = 0" if em.stepped(out, loop)
                else f"{out} = numpy.zeros((N, {em.shape(out, loop)[1]}), dtype=DTYPE)")
        return ["if it == 0:", f"    {zero}", "else:", f"    {em.acc(out, loop)} = {src}[q0:q1]"]

    def c(self, em, op, loop):
        (src,) = op.args
        r, c = em.shape(op.out, loop)
        size = em.bytes((r, c))
        return [f"if (it == 0) memset({em.ptr(op.out, loop)}, 0, {size});",
                f"else memcpy({em.ptr(op.out, loop)}, {em.name(src)} + q*{c}*N, {size});"]
