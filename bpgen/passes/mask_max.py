"""Pass: a row max of masked scores made in the mask's pass (the C rule).

Softmax over masked scores shifts each row by its maximum: Sm =
causal_mask(S, -∞), then m = rowmax(Sm), a second pass over the (h·T·N, T)
scores (512 KB for the 32-step, 4-head transformer at N = 16).  The mask
visits every row anyway (runtime/causal_mask.c); ``bpg_causal_mask_max``
also takes the row's maximum there, over its kept keys while the row is in
the cache (the -∞ fills never exceed it, and a row keeps key 0): the same
m but for the sign of a zero maximum and rows holding NaN, whose softmax
is the same all the same (see runtime/causal_mask_max.c).

Plain data: {m: Sm} for each top-level m = rowmax(Sm) whose Sm is a
top-level causal mask's result, made at the mask's place (the rowmax's
place keeps its equation as a comment).
"""
from __future__ import annotations

__all__ = ["mask_maxes"]


def mask_maxes(prog) -> dict:
    producer = {op.out: op for op in prog.ops}
    out = {}
    for op in prog.ops:
        if op.primitive.name != "rowmax" or op.loop is not None or op.out in prog.step_vars:
            continue
        p = producer.get(op.args[0])
        if (p is not None and p.primitive.name == "causal_mask" and p.loop is None
                and p.out not in prog.step_vars and p.out not in out.values()):
            out[op.out] = p.out
    return out
