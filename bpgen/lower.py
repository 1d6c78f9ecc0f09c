"""Stage 3: the derived graph -> one lowered program per generated function.

A :class:`Program` is plain data: the ordered ops that compute the requested
outputs from the inputs, after dead-code elimination, fusion of single-use
elementwise maps into their consumer, merging of repeated ops
(:mod:`bpgen.passes.merge`) and a costly call that several maps evaluate
made once (:mod:`bpgen.passes.share_calls`: gelu's erf, read by the
forward map and its derivative), with the storage of every temporary laid out in
one workspace (offsets linear in the batch size N).  The optimisation
passes (:func:`bpgen.passes.optimise`) then run once on it, and each
backend's decisions travel with the program (``Program.plans``); last, the
slots are reused by liveness over the order the C plan prints
(:func:`bpgen.passes.allocate.reuse_workspace`: a slot serves a later
temporary once nothing reads the one in it, so the backward pass writes
into memory still in the cache).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from .ir import Graph
from .passes import merge_duplicates, optimise
from .passes.allocate import reuse_workspace
from .passes.share_calls import share_calls
from .shapes import ceil8, plus, size_coeffs

__all__ = ["Program", "lower", "size_coeffs"]


@dataclass
class Program:
    name: str
    inputs: list          # variable names, in signature order
    outputs: list         # variable names, in signature order
    ops: list             # list[Op]
    vars: dict            # name -> Var (only those the program touches)
    forward_ops: dict     # var -> the op defining it (for "Grad of" comments)
    workspace: dict       # temp name -> (a, b): offset = a*N + b
    workspace_size: tuple  # (a, b): total = a*N + b elements
    loops: dict = dataclasses.field(default_factory=dict)   # loop id -> info
    step_vars: set = dataclasses.field(default_factory=set)  # loop vars kept one step at a time
    #: backend -> its decisions (bpgen.passes: CPlan, NumpyPlan), set by optimise
    plans: dict = dataclasses.field(default_factory=dict)


def _uses(ops: list, outputs: list) -> dict:
    uses: dict[str, int] = {}
    for op in ops:
        for a in op.args:
            uses[a] = uses.get(a, 0) + 1
    for o in outputs:
        uses[o] = uses.get(o, 0) + 1
    return uses


def _dce(ops: list, outputs: list) -> list:
    # a loop's state read (prev) names a variable defined later in the loop,
    # so liveness is iterated to a fixed point
    live = set(outputs)
    while True:
        keep = []
        before = len(live)
        for op in reversed(ops):
            if op.out in live:
                keep.append(op)
                live.update(op.args)
        if len(live) == before:
            return list(reversed(keep))


def _fuse(ops: list, outputs: list, vars: dict, keep: frozenset = frozenset()) -> list:
    """Inline elementwise maps into the map that consumes them.

    A map is inlined when it is used exactly once and has the consumer's
    shape (no work is repeated), or when it is a pure broadcast or constant
    (free to recompute anywhere); never a map in ``keep``.
    """
    changed = True
    while changed:
        changed = False
        uses = _uses(ops, outputs)
        producer = {op.out: i for i, op in enumerate(ops)}
        for ci, op in enumerate(ops):
            if not op.primitive.elementwise:
                continue
            for a in op.args:
                pi = producer.get(a)
                if (pi is None or not ops[pi].primitive.elementwise or a in outputs
                        or a in keep):
                    continue
                p = ops[pi]
                if p.loop != op.loop:
                    continue
                pexpr = p.attrs["expr"]
                cheap = pexpr.is_Symbol or not any(
                    s.name in vars for s in pexpr.free_symbols)
                same = vars[p.out].shape == vars[op.out].shape
                if not cheap and not (same and uses[a] == 1):
                    continue
                expr = op.attrs["expr"].xreplace({sp.Symbol(a): pexpr})
                args = tuple(sorted(s.name for s in expr.free_symbols if s.name in vars))
                ops[ci] = dataclasses.replace(op, args=args, attrs={**op.attrs, "expr": expr})
                changed = True
                break
            if changed:
                break
        if changed:
            ops = _dce(ops, outputs)
    return ops


def lower(g: Graph, name: str, inputs: list, outputs: list, n_forward: int,
          keep: frozenset = frozenset(), plan: bool = True) -> Program:
    """The program computing ``outputs`` from ``inputs`` (variable names).

    ``Op.grad_of`` names the op whose derivative an op computes (for the
    ``Grad of`` comments, see ``Program.forward_ops``); ``n_forward`` is the
    length of the forward pass in ``g.ops``; maps in ``keep`` are never
    inlined into their consumers.  ``plan=False`` leaves the optimisation
    passes to the caller (hessian_columns plans its two parts instead)."""
    ops = _dce([dataclasses.replace(op) for op in g.ops], outputs)
    ops = _fuse(ops, outputs, g.vars, frozenset(keep))
    ops = merge_duplicates(ops, outputs)
    if plan:       # a costly call two maps make, made once (passes/share_calls.py)
        ops = share_calls(ops, g)
    used = set(inputs) | set(outputs)
    for op in ops:
        used.add(op.out)
        used.update(op.args)
    defined = {o.out for o in ops}
    missing = [a for op in ops for a in op.args if a not in inputs and a not in defined]
    if missing:
        raise AssertionError(f"{name}: unbound variables {missing}")
    # a loop variable read only inside its own loop, and not as recurrent
    # state, needs one step of storage; the others keep every step
    seq_needed = set(outputs)
    for op in ops:
        for a in op.args:
            v = g.vars[a]
            if v.loop is not None and (op.loop != v.loop or op.primitive.state_read):
                seq_needed.add(a)
    step_vars = {op.out for op in ops
                 if op.loop is not None and op.out not in seq_needed}
    # workspace: every temporary that is not an output gets its own slot
    # (reused by liveness below, once the passes have planned the program)
    ws, a_tot, b_tot = {}, 0, 0
    for op in ops:
        if op.out in outputs or op.out in ws:
            continue
        ws[op.out] = (a_tot, b_tot)
        shape = g.vars[op.out].shape
        if op.out in step_vars:
            shape = ("N", shape[1])
        a, b = size_coeffs(shape)
        # keep every slot 8-element aligned for vectorised loops
        a_tot = plus(a_tot, ceil8(a)) if a != 0 else a_tot
        b_tot = plus(b_tot, ceil8(b)) if b != 0 else b_tot
    prog = Program(name, list(inputs), list(outputs), ops,
                   {k: v for k, v in g.vars.items() if k in used},
                   {op.out: op for op in g.ops}, ws, (a_tot, b_tot), dict(g.loops), step_vars)
    if not plan:
        return prog
    prog = optimise(prog)
    # then the slots reused by liveness, over the order the C emitter prints
    # (bpgen.passes.allocate.reuse_workspace)
    reused = reuse_workspace(prog, _printed_spans(prog), prog.plans["c"].in_place)
    if reused is not None:
        prog.workspace, prog.workspace_size = reused
    return prog


def _printed_spans(prog: Program) -> list:
    """Lists of op indices the C plan prints as one statement: its loop runs
    (with and without the accumulations), each product added into a map
    with that map (it is made where the map is), a scaled product with its
    map and a folded scale with the products that read its argument
    (bpgen.passes.fold_scale), a masked row max with its mask
    (bpgen.passes.mask_max)."""
    plan = prog.plans["c"]
    index = {op.out: i for i, op in enumerate(prog.ops)}
    spans = [list(idx) for idx in (*plan.runs.values(), *plan.runs_alone.values())]
    for z, (_, products) in plan.accumulate.items():
        spans.append([index[z], *(index[p] for p in products)])
    # a scaled product made at its map's place; a scale read by its products
    for y, (x, _) in plan.scales["into"].items():
        spans.append([index[y], index[x]])
    readers = {}
    for i, op in enumerate(prog.ops):
        for a in op.args:
            readers.setdefault(a, []).append(i)
    for y in plan.scales["read_by"]:
        spans.append([index[y], *readers[y]])
    for m, sm in plan.mask_max.items():     # a row max made with its mask
        spans.append([index[sm], index[m]])
    return spans
