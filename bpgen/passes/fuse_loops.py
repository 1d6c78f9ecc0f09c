"""Pass: loop fusion of consecutive element-wise statements (the C rule).

Lowering already inlines a map used once into the map that reads it
(:func:`bpgen.lower._fuse`); what is left are maps read more than once or by
a non-map, and the sums that reduce them.  Each still is its own pass over
its (R, C) operands: a layer norm's backward step, for instance, reads the
same (T·N, F) rows five times.  This pass finds runs of consecutive
top-level statements over one (R, C) shape

* maps (``Primitive.elementwise``) of shape (R, C), their arguments (R, C),
  rows (R, 1), columns (1, C) or scalars;
* sums (row sums, column sums, the total: ``Primitive.reduces``, by
  ``attrs["axis"]`` 1, 0 or None) of an (R, C) array,

that the C emitter prints as one loop over the rows of (R, C), in phases:
a map that reads a row sum of the run starts a new pass over the row's
columns, after the sum is complete (a softmax's exponentials, their sum and
the weights; a layer norm's centring, variance and normalisation: each
row's values are then re-read from the L1 cache, not from memory).  Each
map's value is a local of its phase's loop body, stored to its array only
when a later phase, a statement after the run (or the caller) reads it; the
sums accumulate in the same loop.  A run ends at any other statement, at a
map that reads a column sum or total of the run (complete only after the
loop) and inside time-step loops (not fused); a run may span ``Grad of``
blocks (the emitter prints their heads above the statements they head).
Plain data: {index of the run's first op: indices of its ops}.
"""
from __future__ import annotations

__all__ = ["fusable_runs"]


def _map_fits(prog, op, shape, exclude=frozenset()) -> bool:
    """A map of shape ``shape`` whose arguments broadcast by rows, columns
    or as a scalar (what one loop over ``shape`` reads), not in ``exclude``."""
    if (not op.primitive.elementwise or op.attrs["expr"].is_Symbol or op.out in exclude
            or prog.vars[op.out].shape != shape):
        return False
    r, c = shape
    return all(prog.vars[a].shape in ((r, c), (r, 1), (1, c), (1, 1)) for a in op.args)


def _sum_fits(prog, op, shape) -> bool:
    return (op.primitive.reduces and op.attrs["axis"] in (0, 1, None)
            and prog.vars[op.args[0]].shape == shape)


def _shape_of(prog, op, exclude):
    """The (R, C) a run starting at ``op`` loops over, or None."""
    if op.loop is not None or op.out in prog.step_vars:
        return None
    if op.primitive.elementwise:
        shape = prog.vars[op.out].shape
        return shape if _map_fits(prog, op, shape, exclude) else None
    if op.primitive.reduces and op.attrs["axis"] in (0, 1, None):
        return prog.vars[op.args[0]].shape
    return None


def fusable_runs(prog, exclude=frozenset()) -> dict:
    """{i: (i, j, ...)}: the runs of two or more ops of ``prog.ops`` that
    the C emitter prints as one loop (see the module); no map in ``exclude``
    (the maps products are added into, bpgen.passes.accumulate)."""
    ops, runs, i = prog.ops, {}, 0
    while i < len(ops):
        shape = _shape_of(prog, ops[i], exclude)
        if shape is None or shape == (1, 1):
            i += 1
            continue
        members, sums, j = [i], set(), i + 1
        if ops[i].primitive.reduces and ops[i].attrs["axis"] != 1:
            sums.add(ops[i].out)
        while j < len(ops):
            op = ops[j]
            if (op.loop is not None or op.out in prog.step_vars
                    or any(a in sums for a in op.args)):
                break
            if _map_fits(prog, op, shape, exclude):
                members.append(j)
            elif _sum_fits(prog, op, shape):
                members.append(j)
                if op.attrs["axis"] != 1:       # a row's sum is read after its row
                    sums.add(op.out)
            else:
                break
            j += 1
        if len(members) > 1:
            runs[i] = tuple(members)
        i = max(j, i + 1)
    return runs
