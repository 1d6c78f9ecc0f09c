"""``hessian_columns`` as plain data: the Hessian-vector product split in
two, for many directions at once.

:func:`bpgen.derivation._hessian_columns` lowers one program whose ops
that do not depend on v (the forward and backward pass) come first and
whose tangent ops (the R-operator) follow; :func:`split` turns it into a
:class:`Columns`: the *head* program, run once, the *tangent* program, run
once per chunk of directions (the directions as extra columns: a batched
variable of shape (r, c) stored as (r, K, c)), the direction and result
blocks in the flat order, which variables carry one value per direction,
whether every tangent op has a rule for k directions at once (decided here,
once, by asking each primitive), and the per-direction workspace of the
batched variables (:func:`bpgen.passes.allocate.allocate`).

Backends print the two programs like any other and drive them from this
data: the chunk loop and the direction copies are runtime code
(``backends/c/runtime/columns_*.c`` and the C template ``columns.c.j2``;
``backends/numpy/runtime/call.py``'s ``_columns_drive``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .lower import Program
from .passes import optimise
from .passes.allocate import allocate
from .primitives import PRIMITIVES
from .shapes import size_coeffs

__all__ = ["Block", "Columns", "split", "tangent_size"]


@dataclass(frozen=True)
class Block:
    """A block of a direction (a parameter's part of v) or of a result
    (H·v's part for that parameter): variable ``name``, a (rows, cols)
    matrix whose first element is element ``at`` of the flat vector."""
    name: str
    rows: int
    cols: int
    at: int

    @property
    def size(self) -> int:
        return self.rows * self.cols


@dataclass
class Columns:
    """The hvp program split for many directions (see the module docstring)."""
    #: the whole lowered program: the head's ops, then the tangent's
    program: Program
    #: the ops independent of v; outputs: the values the tangent part reads
    head: Program
    #: the tangent ops; inputs: x, y, the parameters, the head's outputs and
    #: the direction blocks; outputs: the result blocks
    tangent: Program
    directions: tuple          # of Block, in the flat order
    results: tuple             # of Block, in the flat order (same shapes)
    #: variables with one value per direction: the directions and every
    #: tangent op's output
    batched: frozenset
    #: every tangent op's primitive has a rule for k directions at once
    #: (``c_batched``, ``numpy_batched``); else one direction at a time
    batched_rule: bool
    #: per direction of a chunk, where each batched variable lives: {name:
    #: (a, b)}, a per-sample one at a*N, a fixed-size one at b after the
    #: per-sample part (N = the batch times the chunk); empty without a
    #: batched rule
    workspace: dict
    #: (A, B): the per-sample part's and the fixed part's size per direction
    workspace_size: tuple

    @property
    def total(self) -> int:
        """The length of a direction: the number of parameters."""
        return sum(b.size for b in self.directions)


def _blocks(prog: Program, names: list) -> tuple:
    out, at = [], 0
    for name in names:
        rows, cols = prog.vars[name].shape
        out.append(Block(name, int(rows), int(cols), at))
        at += rows * cols
    return tuple(out)


def split(prog: Program, n_fixed: int, split_at: int) -> Columns:
    """The :class:`Columns` of ``prog`` (the lowered ``hessian_columns``):
    its first ``n_fixed`` inputs are x, y and the parameters, the others
    the direction blocks; its ops from ``split_at`` on are the tangent part."""
    fixed, vvars = list(prog.inputs[:n_fixed]), list(prog.inputs[n_fixed:])
    head_ops, tangent_ops = prog.ops[:split_at], prog.ops[split_at:]
    batched = frozenset(vvars) | {op.out for op in tangent_ops}
    needed = sorted({a for op in tangent_ops for a in op.args
                     if a not in batched and a not in prog.inputs})
    # each part planned once, here, like any lowered program (the tangent
    # part's batched values change per direction: nothing of theirs moves)
    head = optimise(dataclasses.replace(prog, ops=head_ops, inputs=fixed, outputs=needed))
    tangent = optimise(dataclasses.replace(prog, ops=tangent_ops, inputs=fixed + needed + vvars),
                       varying=batched & set(prog.vars))
    directions, results = _blocks(prog, vvars), _blocks(prog, list(prog.outputs))
    if [(b.rows, b.cols) for b in directions] != [(b.rows, b.cols) for b in results]:
        raise AssertionError("hessian_columns: results not in the directions' shapes")
    rule = all(PRIMITIVES[op.prim].batched_rule(op, batched) for op in tangent_ops)
    workspace, size = {}, (0, 0)
    if rule:
        workspace, size = allocate(prog, tangent_ops, batched, set(vvars) | set(prog.outputs))
    return Columns(prog, head, tangent, directions, results, batched, rule, workspace, size)


def tangent_size(columns: Columns) -> tuple:
    """(a, b): the batched variables take about a*N + b elements per
    direction (all of them at once, an upper bound)."""
    names = columns.batched
    vars_ = columns.program.vars
    return (sum(size_coeffs(vars_[n].shape)[0] for n in names),
            sum(size_coeffs(vars_[n].shape)[1] for n in names))
