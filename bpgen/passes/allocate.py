"""Workspace allocation by liveness: first fit.

:func:`first_fit` places variables at the lowest offset where they overlap
no variable still live (the structured Hessian's assembly uses it for its
temporaries); :func:`allocate` does it for the variables of a list of ops,
split into the per-sample ones (a*N elements) and the fixed-size ones (b),
as the tangent part of ``hessian_columns`` needs for one direction of a
chunk (see :class:`bpgen.columns.Columns`); :func:`reuse_workspace` lays
out a whole function's temporaries by liveness (a slot reused once the
variable in it is read no more), so that the backward pass writes into
memory the forward pass has just freed, still in the cache, rather than
into a new slot of a workspace of one slot per intermediate."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..shapes import ceil8, plus, size_coeffs, symbolic

if TYPE_CHECKING:       # (lower imports this module)
    from ..lower import Program

__all__ = ["first_fit", "allocate", "stored_shape", "reuse_workspace"]


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


def _live_ranges(prog: Program, spans: list) -> tuple:
    """({name: first op index}, {name: last op index}) of every temporary
    of ``prog``: from the op that writes it to the last that reads it, over
    the whole of any loop or span (a run of ops printed as one loop) that
    touches it; the arguments of a view (or of a map that aliases its
    argument) live as long as the view; the arguments of an op whose work
    the C emitter defers to the ops that read its result (an im2col gather
    made a chunk at a time by its products, a product made a chunk at a
    time by the col2im that reads it) live until those read it."""
    ops = prog.ops
    span = {}                       # op index -> (lo, hi) of its loop or run
    loops = {}
    for i, op in enumerate(ops):
        if op.loop is not None:
            lo, hi = loops.get(op.loop, (i, i))
            loops[op.loop] = (min(lo, i), max(hi, i))
    for i, op in enumerate(ops):
        if op.loop is not None:
            span[i] = loops[op.loop]
    for idx in spans:
        lo, hi = min(idx), max(idx)
        for i in idx:
            a, b = span.get(i, (i, i))
            span[i] = (min(a, lo), max(b, hi))
    first, last = {}, {}
    for i, op in enumerate(ops):
        lo, hi = span.get(i, (i, i))
        for name in (op.out, *op.args):
            first[name] = min(first.get(name, lo), lo)
            last[name] = max(last.get(name, hi), hi)
    readers = {}
    for op in ops:
        for a in op.args:
            readers.setdefault(a, []).append(op)
    # until nothing changes: a view's (or deferred op's) arguments as long as
    # its result (views of views, in reverse program order, settle in one pass)
    for op in reversed(ops):
        prim = op.primitive
        deferred = prim.name == "gather" or (
            prim.product and any(r.primitive.name == "scatter" for r in readers.get(op.out, ())))
        if prim.is_view or prim.aliases(op) or deferred:
            for a in op.args:
                last[a] = max(last[a], last[op.out])
    return first, last


def reuse_workspace(prog: Program, spans: list = (), in_place: dict | None = None
                    ) -> tuple | None:
    """(workspace, workspace_size) of ``prog`` (as in :class:`Program`:
    {name: (a, b)}, offset a*N + b) with the slots of its temporaries
    reused by liveness (:func:`_live_ranges`; ``spans``: lists of op
    indices printed as one loop), per-sample ones first fit in the a*N
    part and fixed-size ones in the b part after it, every slot 8-element
    aligned; None when some temporary's size is not a*N or b alone (a
    polynomial in the steps, or both): lowering's one slot each then stays.
    ``in_place``: {result: argument} that may share a slot
    (bpgen.passes.in_place); they do when nothing reads the argument after
    the op that writes the result (the two then one name of their joint
    live range, the result at the argument's offset)."""
    names = list(prog.workspace)
    if not names:
        return None
    coeffs = {}
    for name in names:
        shape = stored_shape(prog, name)
        a, b = size_coeffs(shape)
        if symbolic(a) or symbolic(b) or (a and b):
            return None
        coeffs[name] = (ceil8(a), ceil8(b))
    first, last = _live_ranges(prog, list(spans))
    end = len(prog.ops)
    for name in names:      # a temporary no op touches (none after lowering) lives throughout
        first.setdefault(name, 0)
        last.setdefault(name, end)
    index = {op.out: i for i, op in enumerate(prog.ops)}
    read_at = {}            # name -> the last op index reading it
    for i, op in enumerate(prog.ops):
        for a in op.args:
            read_at[a] = i
    stmt_end = {}           # op index -> the end of the statement printing it
    for idx in spans:
        for i in idx:
            stmt_end[i] = max(stmt_end.get(i, i), *idx)
    root = {}               # result -> the name whose slot it shares
    for out, arg in sorted((in_place or {}).items(), key=lambda item: index[item[0]]):
        r, i = root.get(arg, arg), index[out]
        # nothing reads arg after the op, nor later in the statement printing it
        if (out in coeffs and arg in coeffs and coeffs[out] == coeffs[arg]
                and read_at.get(arg, -1) <= i and last[arg] <= stmt_end.get(i, i)
                and first[out] >= min([i, *(j for idx in spans if i in idx for j in idx)])):
            root[out] = r
            last[r] = max(last[r], last[out])
    order = sorted((n for n in names if n not in root), key=lambda n: (first[n], n))
    per_sample, pa = first_fit([n for n in order if coeffs[n][0]],
                               {n: coeffs[n][0] for n in names}, first, last)
    fixed, pb = first_fit([n for n in order if not coeffs[n][0]],
                          {n: coeffs[n][1] for n in names}, first, last)
    workspace = {**{n: (o, 0) for n, o in per_sample.items()},
                 **{n: (pa, o) for n, o in fixed.items()}}
    for out, r in root.items():
        workspace[out] = workspace[r]
    return {n: workspace[n] for n in names}, (pa, pb)
