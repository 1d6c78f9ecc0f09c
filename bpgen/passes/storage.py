"""Pass (NumPy): where each result of a program goes, so that the printed
code allocates little and calls few ufuncs.

* the outputs are views of one vector allocated at each call (``flat``),
  which the API returns without a copy; the temporaries that fit live in
  the calling thread's workspace (``workspace``), the same arrays at every
  call;
* a recurrent state read is a view, one step back, of its source
  (``views``), which is stored after (before, in a reverse loop) a block of
  zero rows (``buffers``): no copy; a loop whose state reads still copy
  (their source is an input, or kept one step at a time) gets the loop
  header that counts iterations (``copy_loops``);
* a map used only by a concatenation writes into its columns of the result
  (``placed``);
* a map whose argument is a temporary of its shape that is not read again
  writes into it (``inplace``).

:func:`plan_storage` returns a :class:`Storage` (plain data) that the NumPy
emitter only prints.  ``ops`` maps an op's output to the op as it will be
printed (after the hoisting passes), when that differs."""
from __future__ import annotations

import dataclasses

from ..primitives.map import numeric
from ..printers import NumpyPrinter
from ..shapes import broadcast_shape

__all__ = ["Storage", "plan_storage", "seen_shape", "full"]

_PRINTER = NumpyPrinter()


@dataclasses.dataclass
class Storage:
    views: dict        # state read -> its source (a view one step back)
    buffers: dict      # source of state reads -> None (its buffer is named when printed)
    placed: dict       # concat piece -> (concat output, first column)
    inplace: dict      # map output -> the dead temporary it overwrites
    viewed: set        # arguments another variable may be a view of (never overwritten)
    flat: str | None   # the name of the outputs' vector (None: outputs of their own)
    workspace: set     # temporaries that may live in the workspace (when flat)
    copy_loops: set    # loops whose state reads copy (the loop counts iterations)


def seen_shape(prog, name: str, loop) -> tuple:
    """Shape as seen at this point: one step of a sequence inside a loop."""
    shape = prog.vars[name].shape
    if loop is not None and shape[0] == prog.loops[loop]["seq"]:
        return ("N", shape[1])
    return shape


def full(prog, op, loop) -> bool:
    """A map whose arguments broadcast to its whole output."""
    try:
        shapes = [seen_shape(prog, a, loop) for a in op.args]
        return bool(shapes) and broadcast_shape(shapes) == seen_shape(prog, op.out, loop)
    except ValueError:         # shapes that do not broadcast
        return False


def plan_storage(prog, fresh, ops: dict | None = None) -> Storage:
    """The storage plan of ``prog`` (see the module docstring)."""
    ops_list, printed = prog.ops, ops or {}
    producer = {op.out: i for i, op in enumerate(ops_list)}
    last_use, uses = {}, {}
    for i, op in enumerate(ops_list):
        for a in op.args:
            last_use[a] = i
            uses[a] = uses.get(a, 0) + 1
    for o in prog.outputs:
        uses[o] = uses.get(o, 0) + 1
    viewed = {a for op in ops_list if op.primitive.is_view or op.primitive.aliases(op)
              for a in op.args}
    views, buffers, placed, inplace = {}, {}, {}, {}
    for op in ops_list:
        # state reads: views of their source, stored after a block of zeros
        if (op.primitive.state_read and op.args and op.args[0] not in prog.step_vars
                and op.args[0] not in prog.inputs):
            views[op.out] = op.args[0]
            buffers.setdefault(op.args[0], None)
        # concatenations: their pieces written in place
        if op.primitive.places_pieces and op.out not in views:
            pos = 0
            for a in op.args:
                p = ops_list[producer[a]] if a in producer else None
                if (p is not None and p.primitive.elementwise and p.loop == op.loop
                        and uses.get(a) == 1 and full(prog, p, p.loop)
                        and not p.primitive.aliases(p)):
                    placed[a] = (op.out, pos)
                pos += seen_shape(prog, a, op.loop)[1]
    # the outputs, written where the caller finds them: one after the other
    # in one vector, unless one cannot be
    outs = prog.outputs
    flat = None
    if (outs and len(set(outs)) == len(outs) and all(
            o in producer and o not in buffers and o not in views for o in outs)):
        flat = fresh("flat")

    def stepped(name, loop) -> bool:
        return loop is not None and (name in views or (
            name not in prog.step_vars
            and prog.vars[name].shape[0] == prog.loops[loop]["seq"]))

    def dead_temp(a, i, op) -> bool:
        # an array of this function's own, of op's shape, no later op reads
        p = ops_list[producer[a]] if a in producer else None
        if (p is None or a in outs or last_use.get(a) != i or a in views
                or a in buffers or a in placed or a in viewed):
            return False
        if p.primitive.elementwise:
            if p.primitive.aliases(p):         # an alias of its argument
                return False
        elif not p.primitive.product:
            return False
        if p.loop != op.loop or (op.loop is not None and a not in prog.step_vars):
            return False
        return seen_shape(prog, a, op.loop) == seen_shape(prog, op.out, op.loop)

    for i, op in enumerate(ops_list):
        if not op.primitive.elementwise or op.out in placed or op.out in outs:
            continue
        if stepped(op.out, op.loop) or not full(prog, op, op.loop):
            continue
        for a in op.args:
            if dead_temp(a, i, op):
                inplace[op.out] = a
                break
    # temporaries of the function, or of one step of a loop (dead when the
    # step ends: one array serves every step), that may live in the workspace
    workspace = set()
    for op in ops_list:
        op = printed.get(op.out, op)
        prim = op.primitive
        if ((op.loop is None or op.out in prog.step_vars) and op.out not in outs
                and (prim.product or (prim.elementwise and full(prog, op, op.loop)
                                      and _PRINTER.can_into(numeric(op.attrs["expr"]))))):
            workspace.add(op.out)
    copy_loops = {op.loop for op in ops_list
                  if op.primitive.state_read and op.out not in views}
    return Storage(views, buffers, placed, inplace, viewed, flat, workspace, copy_loops)
