"""Pass: constant scales folded into the ``seqmm`` products (the C rule).

Attention scales its scores: S = QK/√d, and in the backward pass
δQK = δS/√d.  Each is a map of one argument times a constant, a pass of its
own over the (h·T·N, T) scores (512 KB for the 32-step, 4-head transformer
at N = 16) where the BLAS takes the constant as the product's α for free:

* ``into``: a map Y = c·X whose X is a seqmm result read by nothing else
  (not a result of the function): the seqmm writes Y with α = c, printed
  at Y's place; X's own place keeps its equation as a comment;
* ``read_by``: a map Y = c·X read only by seqmm products (not a result of
  the function): each of them reads X with α times c (c² when it reads Y
  twice); Y's place keeps its equation as a comment.

Only maps outside loops, not kept one step at a time and not in
``exclude`` (the maps products are added into, bpgen.passes.accumulate);
the maps folded join no fused loop (bpgen.passes.fuse_loops).  The
derivation is unchanged (``bpgen show`` and ``bpgen doc`` print S = QK/√d);
only the C emitter's printing is (the equation comments say what is
folded).  α·(ΣAB) differs from the map's c·(ΣAB) by at most the rounding of
the product (equal when c is a power of 2, as 1/√16 = 1/4).

Plain data: ``{"into": {Y: (X, c)}, "read_by": {Y: (X, c)}}``.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["scale_folds"]


def _scaled(op):
    """(X, c) when ``op`` is a map Y = c·X of one argument, c a number ≠ 0."""
    if not op.primitive.elementwise or len(op.args) != 1:
        return None
    x = sp.Symbol(op.args[0])
    # c·X as SymPy holds it (c may be a product of numbers, √2/2): no
    # simplify, which every one-argument map of every program would pay
    c, rest = op.attrs["expr"].as_independent(x, as_Add=False)
    if rest != x or not c.is_number or c == 0 or not c.is_real:
        return None
    return op.args[0], c


def scale_folds(prog, exclude=frozenset()) -> dict:
    ops = prog.ops
    readers: dict = {}
    for op in ops:
        for a in op.args:
            readers.setdefault(a, []).append(op)
    producer = {op.out: op for op in ops}
    outs = set(prog.outputs)
    into, read_by = {}, {}

    def top(op):
        return op.loop is None and op.out not in prog.step_vars

    for op in ops:
        if not top(op) or op.out in exclude:
            continue
        found = _scaled(op)
        if found is None:
            continue
        x, c = found
        p = producer.get(x)
        if (p is not None and p.primitive.name == "seqmm" and top(p) and x not in outs
                and len(readers.get(x, ())) == 1):
            into[op.out] = (x, c)
            continue
        users = readers.get(op.out, ())
        if (op.out not in outs and users
                and all(u.primitive.name == "seqmm" and top(u) for u in users)):
            read_by[op.out] = (x, c)
    return {"into": into, "read_by": read_by}
