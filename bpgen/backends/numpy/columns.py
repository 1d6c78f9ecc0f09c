"""The NumPy backend's ``hessian_columns``, printed from
:class:`bpgen.columns.Columns` (``derived.columns``) as two generated
functions: ``_columns_head`` (the forward and backward pass, once; it
returns what the tangent part reads) and ``_tangent_columns`` (the tangent
part over K directions at once, in the C backend's layout: a batched
(r, c) is an (r·K, c) array).  The chunk loop and the direction copies are
runtime code: ``runtime/call.py``'s ``_columns_drive``.  Without a rule for
k directions at once (the split says so) there are neither, and the API
takes one hvp per direction."""
from __future__ import annotations

from ...columns import tangent_size
from ...derivation import Derived
from ..common.emitter import Directions
from .emitter import NumpyEmitter, steps_args

__all__ = ["columns_functions", "tangent_bytes"]


class _HeadEmitter(NumpyEmitter):
    """The shared part (the forward and backward pass): its outputs are
    what the tangent part reads, returned as they are."""

    def _plan(self) -> None:
        super()._plan()
        self.flat = None

    def pre_lines(self) -> list:
        # a state read is a view its source's storage makes: not allocated
        outputs = self.prog.outputs
        self.prog.outputs = [o for o in outputs if o not in self.views]
        try:
            return super().pre_lines()
        finally:
            self.prog.outputs = outputs


class _BatchedEmitter(Directions, NumpyEmitter):
    """The tangent part over K directions at once, in the C backend's
    layout (see bpgen.backends.c.columns._BatchedEmitter): a batched (r, c)
    is an (r·K, c) array, N is bound to NB·K, fixed values (the shared
    pass's) keep the batch NB.  Each op is printed by its primitive's
    ``numpy_batched``; every result is a fresh array."""

    def __init__(self, prog, dtype, batched: set):
        self.batched = batched
        super().__init__(prog, dtype)

    def _plan(self) -> None:
        super()._plan()
        self.flat, self.inplace, self.placed = None, {}, {}

    def _full(self, op, loop) -> bool:
        try:
            return super()._full(op, loop)
        except ValueError:         # batched and fixed shapes: not comparable
            return False

    def hoistable(self, name: str) -> bool:
        return name not in self.batched

    def _in_loop(self, a: str, loop) -> bool:
        return a in self.batched or super()._in_loop(a, loop)

    def into(self, op, loop):
        return None

    def statement(self, op, prim, loop) -> list:
        return super().statement(op, _Batched(prim), loop)


class _Batched:
    """A primitive seen through its ``numpy_batched`` rule."""

    def __init__(self, prim):
        self.prim = prim

    def numpy(self, em, op, loop):
        return self.prim.numpy_batched(em, op, loop)

    def __getattr__(self, name):
        return getattr(self.prim, name)


def columns_functions(derived: Derived) -> list:
    """The generated functions of ``hessian_columns``: ``_columns_head(x,
    y, params...)`` and ``_tangent_columns(x, y, params..., <what the
    head returns>..., <the K directions' blocks>..., K)``, which returns the
    blocks of H·v for the K directions; [] without a rule for k directions
    at once (or without hessian_columns)."""
    cols = derived.columns
    if cols is None or not cols.batched_rule:
        return []
    dtype = derived.spec.dtype
    head = {"name": "columns_head", "args": steps_args(cols.head, cols.head.inputs),
            "returns": cols.head.outputs,
            "pre": [], "blocks": _HeadEmitter(cols.head, dtype).blocks()}
    tangent = {"name": "tangent_columns",
               "args": steps_args(cols.tangent, cols.tangent.inputs) + ["K"],
               "returns": cols.tangent.outputs,
               "pre": ["NB = N  # the batch",
                       "N = NB*K  # the tangent pass runs on N·K rows: sample n in direction "
                       "d is row n·K + d"],
               "blocks": _BatchedEmitter(cols.tangent, dtype, cols.batched).blocks()}
    return [head, tangent]


def tangent_bytes(derived: Derived) -> tuple:
    """(a, b): _tangent_columns' tangents take about a*N + b bytes per
    direction (all of them at once, an upper bound)."""
    if derived.columns is None:
        return (0, 0)
    a, b = tangent_size(derived.columns)
    item = 4 if derived.spec.dtype == "float32" else 8
    return (a * item, b * item)
