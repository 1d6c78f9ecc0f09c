"""Pass: zero-fill masks of values already 0 at the masked keys (the C rule).

The backward pass of a masked softmax masks the scores' cotangent:
δS = causal_mask(δSm, 0), a pass over the (h·T·N, T) scores (512 KB for
the 32-step, 4-head transformer at N = 16).  Yet δSm = E ⊙ (...) with
E = exp(Sm - m) and Sm = causal_mask(S, -∞) over the same keys: at a
masked key Sm = -∞, so E = exp(-∞) = 0 exactly (``bpg_exp`` and plain exp
alike; m is a row's maximum over its kept keys, finite for finite scores),
and δSm = 0·(...) = 0, which the mask would only write again.  This pass
derives it, for every top-level zero-fill mask Z = causal_mask(Y, 0):
Y is *zero at the keys* of Z's mask (the same key mask M, causal flag and
steps) when Y is

* the result of a zero-fill mask of those keys, or
* a map whose expression is 0 with every argument zero at the keys set to
  0 and every -∞ mask of those keys set to -∞ (SymPy: exp(-∞ - m) = 0,
  0·x = 0; anything else, -∞·0 or log 0 say, is not 0 and keeps the mask).

So δSm (E's factor), the Hessian-vector product's R{δSm} = δE ⊙ R{E} +
E ⊙ (...) with R{E} = E ⊙ R{Sm} and R{Sm} a zero-fill mask, and so on.
Such a mask is the identity on its argument, for finite values of the
other factors (where they are ±∞ or NaN at a masked key, the mask would
have written 0 where this leaves NaN; the whole gradient is then not
finite anyway).  The C emitter prints it as nothing when its result shares
its argument's slot (bpgen.passes.in_place), else as the mask (a copy).

Plain data: {Z: Y}.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["idle_masks"]


def _keys(op) -> tuple:
    return (tuple(op.args[1:]), op.attrs.get("causal", True), op.attrs["steps"])


def idle_masks(prog) -> dict:
    producer = {op.out: op for op in prog.ops}
    memo: dict = {}

    def zero_at(name: str, keys: tuple) -> bool:
        key = (name, keys)
        if key in memo:
            return memo[key]
        memo[key] = False               # (no cycles outside loops; a guard)
        op = producer.get(name)
        ok = False
        if op is not None and op.loop is None and name not in prog.step_vars:
            if op.primitive.name == "causal_mask":
                ok = op.attrs["fill"] == "0" and _keys(op) == keys
            elif op.primitive.elementwise:
                sub = {}
                for a in op.args:
                    p = producer.get(a)
                    if (p is not None and p.primitive.name == "causal_mask" and p.loop is None
                            and p.attrs["fill"] == "-inf" and _keys(p) == keys):
                        sub[sp.Symbol(a)] = -sp.oo
                    elif zero_at(a, keys):
                        sub[sp.Symbol(a)] = sp.Integer(0)
                if sub:
                    try:
                        ok = sp.simplify(op.attrs["expr"].subs(sub)) == 0
                    except (TypeError, ValueError):
                        ok = False
        memo[key] = ok
        return ok

    out = {}
    for op in prog.ops:
        if (op.primitive.name == "causal_mask" and op.loop is None and op.attrs["fill"] == "0"
                and op.out not in prog.step_vars and zero_at(op.args[0], _keys(op))):
            out[op.out] = op.args[0]
    return out
