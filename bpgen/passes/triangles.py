"""Pass: the ``seqmm`` block products that need only the causal triangle
(the C rule).

A scores matrix (h·T·N, T) holds per (head, step t, sample) row one column
per key s; the entries with s > t lie *above the diagonal*.  A causal mask
(``causal_mask`` with ``causal``) sets them to its fill, so what is made
from the masked scores is known there too, found from the maps' own
expressions (SymPy, every other argument a finite real):

* softmax: E = exp(S_m − m) is exp(−∞ − m) = 0, P = E / Z is 0;
* its adjoint: δS_m = E ⊙ (δP / Z + r) is 0 whatever δP holds, and so is
  −δP ⊙ P / Z; the mask's adjoint (fill 0) is 0, and δS / √d;
* the tangents of ``hvp`` likewise (R{P} = P ⊙ (R{S_m} − r)).

Two uses (:func:`triangle_products`, plain data {seqmm output: True}):

* ``av`` and ``atv`` products whose first argument (the scores) is known to
  be 0 above the diagonal read its lower triangle only: the terms left out
  are exact zeros (A·V, δV = Pᵀ·δO, δQ = δS·K, δK = δSᵀ·Q);
* a ``qk`` product whose entries above the diagonal nothing needs (every
  reader masks them, or multiplies them by a known 0, or makes only values
  above the diagonal that nothing needs either) makes the lower triangle
  only and writes 0 above it (S = Q·Kᵀ before the mask; δP = δO·Vᵀ, read
  by the softmax's adjoint only through P and E).  Only for a whole
  function (``whole``): a part of one (hessian_columns' shared pass) has
  readers elsewhere.

Results are the same up to the order of the sums (the skipped terms are
exact zeros for finite values; the BLAS may block the shorter sums
differently): equal to rounding, not bitwise.  A product inside a step
loop is left alone."""
from __future__ import annotations

import sympy as sp

__all__ = ["triangle_products", "above_diagonal"]

_FILL = {"-inf": -sp.oo, "0": sp.Integer(0)}


def _constant(op, known: dict):
    """The value of map ``op`` above the diagonal when ``known`` fixes some
    of its arguments' values there (the others any finite reals), if that
    makes it a constant (0 or -oo), else None; and whether the value still
    depends on each argument: {arg: bool}."""
    expr = op.attrs["expr"]
    subs = {}
    for s in expr.free_symbols:
        subs[s] = known.get(s.name, sp.Dummy(s.name, real=True, finite=True))
    value = expr.xreplace(subs)
    if value.has(sp.nan, sp.zoo):
        return None, {a: True for a in op.args}
    depends = {a: any(d.name == a for d in value.free_symbols if isinstance(d, sp.Dummy))
               for a in op.args}
    const = value if value in (sp.Integer(0), -sp.oo) else None
    return const, depends


def above_diagonal(prog, lower_qk=frozenset()) -> dict:
    """{scores variable: its value above the diagonal (0 or -oo)} for those
    the program fixes there: the causal masks' results and the maps made
    from them (and the ``qk`` products in ``lower_qk``, 0 there)."""
    known: dict = {}
    for op in prog.ops:
        if op.loop is not None:
            continue
        name = op.primitive.name
        if name == "causal_mask" and op.attrs.get("causal", True):
            known[op.out] = _FILL[op.attrs["fill"]]
        elif name == "seqmm" and op.out in lower_qk:
            known[op.out] = sp.Integer(0)
        elif op.primitive.elementwise and "expr" in op.attrs:
            shape = prog.vars[op.out].shape
            fixed = {a: known[a] for a in op.args
                     if a in known and prog.vars[a].shape == shape}
            if fixed:
                const, _ = _constant(op, fixed)
                if const is not None:
                    known[op.out] = const
    return known


def _needed(prog, known: dict) -> set:
    """The variables whose entries above the diagonal something needs: the
    outputs, the arguments of any op that reads them otherwise than the
    ways the module docstring names, and those of maps whose own values
    there are needed."""
    needed = set(prog.outputs)
    for op in reversed(prog.ops):
        name = op.primitive.name
        if op.loop is not None:
            needed.update(op.args)
        elif name == "causal_mask" and op.attrs.get("causal", True):
            needed.update(op.args[1:])
        elif name == "seqmm" and op.attrs["form"] in ("av", "atv") and known.get(
                op.args[0]) == 0:
            needed.update(op.args[1:])
        elif op.primitive.elementwise and "expr" in op.attrs:
            shape = prog.vars[op.out].shape
            fixed = {a: known[a] for a in op.args
                     if a in known and prog.vars[a].shape == shape}
            _, depends = _constant(op, fixed)
            for a in op.args:
                if depends[a] and (op.out in needed or prog.vars[a].shape != shape):
                    needed.add(a)
        else:
            needed.update(op.args)
    return needed


def triangle_products(prog, whole: bool = True) -> dict:
    """{output of a seqmm op: True} for those that may make (``qk``) or read
    (``av``, ``atv``) the lower triangle of the scores only (module
    docstring); ``whole``: the program is a whole function."""
    seqmm = [op for op in prog.ops if op.primitive.name == "seqmm" and op.loop is None]
    if not seqmm or not any(op.primitive.name == "causal_mask" for op in prog.ops):
        return {}
    known = above_diagonal(prog)
    lower_qk = set()
    if whole:
        needed = _needed(prog, known)
        lower_qk = {op.out for op in seqmm if op.attrs["form"] == "qk"
                    and op.out not in needed}
    known = above_diagonal(prog, frozenset(lower_qk))
    out = {o: True for o in lower_qk}
    for op in seqmm:
        if op.attrs["form"] in ("av", "atv") and known.get(op.args[0]) == 0:
            out[op.out] = True
    return out
