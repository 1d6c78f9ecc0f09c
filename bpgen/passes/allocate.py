"""Workspace allocation by liveness: first fit.

:func:`first_fit` places variables at the lowest offset where they overlap
no variable still live (the structured Hessian's assembly uses it for its
temporaries); :func:`allocate` does it for the variables of a list of ops,
split into the per-sample ones (a*N elements) and the fixed-size ones (b),
as the tangent part of ``hessian_columns`` needs for one direction of a
chunk (see :class:`bpgen.columns.Columns`)."""
from __future__ import annotations

from ..lower import Program
from ..shapes import plus, size_coeffs, symbolic

__all__ = ["first_fit", "allocate", "stored_shape"]


def first_fit(names: list, size: dict, first: dict, last: dict) -> tuple:
    """({name: offset}, total): each of ``names`` (in order) at the lowest
    offset where it overlaps no earlier one still live (op indices
    first[name] .. last[name])."""
    placed, offsets, total = [], {}, 0
    if any(symbolic(size[n]) for n in names):
        # steps: any: sizes are polynomials in T, which first fit cannot
        # order for every T; each variable gets a place of its own
        for name in names:
            offsets[name] = total
            total = plus(total, size[name])
        return offsets, total
    for name in names:
        live = sorted((o, o + s) for n, o, s in placed if last[n] >= first[name])
        off = 0
        for lo, hi in live:              # first fit between the live ones
            if off + size[name] <= lo:
                break
            off = max(off, hi)
        placed.append((name, off, size[name]))
        offsets[name] = off
        total = max(total, off + size[name])
    return offsets, total


def stored_shape(prog: Program, var: str) -> tuple:
    """The shape ``var`` takes in the workspace: one step of it when the
    program keeps it one step at a time."""
    shape = prog.vars[var].shape
    return ("N", shape[1]) if var in prog.step_vars else shape


def allocate(prog: Program, ops: list, names: set, whole: set) -> tuple:
    """({name: (a, b)}, (A, B)): offsets of the variables in ``names`` that
    ``ops`` read or write (a per-sample one at a*N, b = 0; a fixed-size one
    at b, a = 0, counted from the end A*N of the per-sample part) and the
    totals, reusing the memory of those no longer read.  A variable that a
    loop touches is live for the whole loop; those in ``whole`` for all of
    ``ops``."""
    first, last, span = {}, {}, {}
    for i, op in enumerate(ops):
        if op.loop is not None:
            lo, hi = span.get(op.loop, (i, i))
            span[op.loop] = (min(lo, i), max(hi, i))
    for i, op in enumerate(ops):
        lo, hi = span.get(op.loop, (i, i))
        for name in (op.out, *op.args):
            if name in names:
                first[name] = min(first.get(name, lo), lo)
                last[name] = max(last.get(name, hi), hi)
    for name in whole:
        first[name], last[name] = 0, len(ops)
    coeffs = {name: size_coeffs(stored_shape(prog, name)) for name in first}
    order = sorted(first, key=lambda n: (first[n], n))
    per_sample, pa = first_fit([n for n in order if coeffs[n][0]],
                               {n: a for n, (a, _) in coeffs.items()}, first, last)
    fixed, pb = first_fit([n for n in order if not coeffs[n][0]],
                          {n: b for n, (_, b) in coeffs.items()}, first, last)
    return ({**{n: (o, 0) for n, o in per_sample.items()},
             **{n: (0, o) for n, o in fixed.items()}}, (pa, pb))
