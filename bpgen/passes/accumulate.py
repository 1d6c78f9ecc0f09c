"""Pass: products added into a map's result (the C rule).

A map Z = P₁ + P₂ + ... + rest whose terms P are matrix products read by
nothing else (of Z's shape, top-level, not results of the function) is
printed as Z = rest (a bias row, a residual: one pass, as before), then
Z += P for each product, by the BLAS with β = 1, instead of each product
into its own array and a pass that reads them all: a layer's pre-activation
XW + b, a residual block's output, the three projections' gradients
δQ·Wqᵀ + δK·Wkᵀ + δV·Wvᵀ.  (With rest = 0 the first product is written,
not added.)  OpenBLAS zeroes C for β = 0 anyway; with β = 1 it does not, and
the separate pass over each product's result goes.

Plain data: {Z: (rest or None, (P₁, P₂, ...))}; the products print at Z's
place (their own places keep their equations as comments).
"""
from __future__ import annotations

import sympy as sp

__all__ = ["c_accumulations"]


def c_accumulations(prog) -> dict:
    ops = prog.ops
    readers: dict = {}
    for op in ops:
        for a in op.args:
            readers[a] = readers.get(a, 0) + 1
    producer = {op.out: op for op in ops}
    out = {}
    for op in ops:
        if (op.loop is not None or not op.primitive.elementwise or op.out in prog.step_vars
                or not isinstance(op.attrs["expr"], sp.Add)):
            continue
        shape = prog.vars[op.out].shape
        products = []
        for term in op.attrs["expr"].args:
            p = producer.get(term.name) if isinstance(term, sp.Symbol) else None
            if (p is not None and p.primitive.product and p.loop is None
                    and p.out not in prog.outputs and p.out not in prog.step_vars
                    and readers.get(p.out) == 1 and prog.vars[p.out].shape == shape):
                products.append(p.out)
        if not products:
            continue
        rest = op.attrs["expr"] - sp.Add(*(sp.Symbol(p) for p in products))
        out[op.out] = (None if rest == 0 else rest, tuple(products))
    return out
