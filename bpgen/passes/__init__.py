"""The optimisation stage: passes over a lowered program, run once, before
emission, by :func:`optimise` (called by :func:`bpgen.lower.lower`).

One pass a file, each a function from a program to plain data:

* :mod:`.merge`: repeated ops merged (backend-independent; lowering runs it
  on the op list, before the workspace is laid out);
* :mod:`.transposes`: which transposed loop-invariant product operands get
  a contiguous copy, made before which loop (a C and a NumPy rule);
* :mod:`.accumulate`: products added into the map that sums them (C, BLAS
  β = 1);
* :mod:`.fold_scale`: constant scales (attention's 1/√d) folded into the
  seqmm products that make or read them (C, the BLAS's α);
* :mod:`.in_place`: the results that may take their argument's storage
  (C: the causal mask's; the workspace layout decides);
* :mod:`.mask_max`: a row max of masked scores made in the mask's pass (C);
* :mod:`.idle_masks`: zero-fill masks of values already 0 at the masked
  keys (C: nothing printed when in place);
* :mod:`.fuse_loops`: runs of consecutive element-wise maps and sums printed
  as one loop (C; not the maps products are added into);
* :mod:`.invariants`: the loop-invariant factors of maps, hoisted before
  their loop (NumPy);
* :mod:`.storage`: where every NumPy result goes (views, pieces written in
  place, in-place maps, the outputs' vector, the workspace, the loop header);
* :mod:`.allocate`: first-fit placement of temporaries by liveness (a
  lowered function's workspace, over the order its C plan prints:
  ``reuse_workspace``, run by :func:`bpgen.lower.lower` after
  :func:`optimise`; the hessian_columns tangent part's workspace, the
  assemblies' scratch);
* :mod:`.hoist_independent`: hessian_columns' v-free expensive
  subexpressions of the tangent part, moved to the part computed once.

:func:`optimise` stores each backend's decisions on the program
(``Program.plans[backend]``, a :class:`CPlan` or :class:`NumpyPlan`); the
emitters read them (:func:`plan_for`) and only print.
"""
from __future__ import annotations

import dataclasses

from .accumulate import c_accumulations
from .fold_scale import scale_folds
from .fuse_loops import fusable_runs
from .idle_masks import idle_masks
from .in_place import c_in_place
from .mask_max import mask_maxes
from .invariants import Hoisted, hoist_invariants
from .merge import merge_duplicates
from .storage import Storage, plan_storage
from .transposes import Fresh, Transpose, c_transposes, numpy_transposes

__all__ = ["CPlan", "NumpyPlan", "optimise", "plan_for", "merge_duplicates", "Hoisted",
           "Transpose", "Storage"]


@dataclasses.dataclass
class CPlan:
    """The C backend's decisions for one program."""
    ops: tuple          # the outputs of the ops planned for (a plan fits one op list)
    transposes: dict    # {B: (loop, name of Bᵀ)}: copies made before that loop
    runs: dict = dataclasses.field(default_factory=dict)  # {i: op indices}: one loop each
    #: {Z: (rest or None, products)}: Z = rest, then Z += each product
    accumulate: dict = dataclasses.field(default_factory=dict)
    #: the runs without accumulate (its maps may then join a run)
    runs_alone: dict = dataclasses.field(default_factory=dict)
    #: {"into": {Y: (X, c)}, "read_by": {Y: (X, c)}}: scales folded into
    #: seqmm products (bpgen.passes.fold_scale; with accumulate only)
    scales: dict = dataclasses.field(default_factory=lambda: {"into": {}, "read_by": {}})
    #: {result: argument}: may share the argument's slot (bpgen.passes.in_place)
    in_place: dict = dataclasses.field(default_factory=dict)
    #: {m: Sm}: m = rowmax(Sm) made with the mask Sm (bpgen.passes.mask_max)
    mask_max: dict = dataclasses.field(default_factory=dict)
    #: {Z: Y}: Z = causal_mask(Y, 0) is Y (bpgen.passes.idle_masks)
    idle_masks: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class NumpyPlan:
    """The NumPy backend's decisions for one program."""
    ops: tuple          # the outputs of the ops planned for
    varying: frozenset  # names that may not move before a loop (planned with)
    printed: dict       # op out -> the op as printed (reading copies and hoisted values)
    pre: dict           # op out -> [Transpose | Hoisted] made before its loop, in order
    new_vars: dict      # name -> Var of every copy and hoisted value
    storage: Storage


def _key(prog) -> tuple:
    return tuple(op.out for op in prog.ops) + ("->",) + tuple(prog.outputs)


def _numpy(prog, varying=frozenset()) -> NumpyPlan:
    fresh = Fresh(prog.vars)
    printed, pre, new_vars = numpy_transposes(prog, fresh, varying)
    hoisted, pre_h, vars_h = hoist_invariants(prog, fresh, varying)
    printed.update(hoisted)
    new_vars.update(vars_h)
    for out, items in pre_h.items():       # an op is a product or a map, not both
        pre.setdefault(out, []).extend(items)
    seen = dataclasses.replace(prog, vars={**prog.vars, **new_vars})
    storage = plan_storage(seen, fresh, printed)
    return NumpyPlan(_key(prog), frozenset(varying), printed, pre, new_vars, storage)


def _c(prog, varying) -> CPlan:
    acc = c_accumulations(prog)
    scales = scale_folds(prog, exclude=set(acc))    # (their maps print no loop)
    folded = set(acc) | set(scales["into"]) | set(scales["read_by"])
    return CPlan(_key(prog), c_transposes(prog), fusable_runs(prog, exclude=folded), acc,
                 fusable_runs(prog), scales, c_in_place(prog), mask_maxes(prog),
                 idle_masks(prog))


_PASSES = {"c": _c,
           "numpy": _numpy}


def optimise(prog, backends=("c", "numpy"), varying=frozenset()):
    """Run every backend's passes on ``prog`` once; their decisions are
    stored in ``prog.plans``.  Returns ``prog``.  ``varying``: names that
    may not move before a loop (the NumPy passes; e.g. the tangents of
    hessian_columns' part over many directions, which change per direction)."""
    plans = dict(prog.plans)      # a new dict: copies of a program share the old one
    for backend in backends:
        plans[backend] = _PASSES[backend](prog, frozenset(varying))
    prog.plans = plans
    return prog


def plan_for(prog, backend: str, varying=frozenset()):
    """``prog``'s decisions for ``backend``: those :func:`optimise` stored,
    or, for a program made after lowering (a part of one, the hessian_columns
    driver's; a hand-built one), planned now."""
    plan = prog.plans.get(backend)
    if plan is not None and plan.ops == _key(prog) and (
            backend != "numpy" or plan.varying == frozenset(varying)):
        return plan
    return _PASSES[backend](prog, frozenset(varying))
