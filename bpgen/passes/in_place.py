"""Pass: results written over their argument (the C rule).

A primitive whose C rule is right with its result in its first argument's
storage (``Primitive.c_in_place``: the causal mask, whose runtime helper
then writes only the masked entries, not a copy of the 512 KB of scores
of the 32-step, 4-head transformer at N = 16) may have its result take
that storage when nothing reads the argument afterwards.  This pass lists
the candidates: top-level ops of such primitives whose argument and result
are both temporaries of the workspace of one size, the argument no view and
no alias (its storage its own).  Whether the argument is read afterwards
is for the workspace layout to decide (:func:`bpgen.passes.allocate.
reuse_workspace`, over the order the C plan prints): it gives the two one
slot then, else each its own (and the helper copies).

Plain data: {result: argument}.
"""
from __future__ import annotations

__all__ = ["c_in_place"]


def c_in_place(prog) -> dict:
    producer = {op.out: op for op in prog.ops}
    ws, outs = prog.workspace, set(prog.outputs)
    out = {}
    for op in prog.ops:
        if not op.primitive.c_in_place or op.loop is not None or not op.args:
            continue
        a = op.args[0]
        p = producer.get(a)
        if (p is None or a not in ws or op.out not in ws or a in outs or op.out in outs
                or a in prog.step_vars or op.out in prog.step_vars
                or p.primitive.is_view or p.primitive.aliases(p)
                or prog.vars[a].shape != prog.vars[op.out].shape):
            continue
        out[op.out] = a
    return out
