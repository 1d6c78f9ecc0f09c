"""The NumPy backend's ``_tangent_columns``: H·v for many directions, the
forward and backward pass once, then the tangent part over a chunk of
directions at once, in the C backend's layout."""
from __future__ import annotations

import dataclasses

from ...derivation import Derived
from ...shapes import size_coeffs
from ..common.emitter import Directions
from .emitter import NumpyEmitter

__all__ = ["columns_or_none", "tangent_bytes"]


class _HeadEmitter(NumpyEmitter):
    """The shared part of ``_tangent_columns`` (the forward and backward
    pass): its outputs are what the tangent part reads, kept as they are."""

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
    """The tangent part of ``_hessian_columns`` over K directions at once,
    in the C backend's layout (see bpgen.backends.c.emitter._BatchedEmitter):
    a batched (r, c) is an (r·K, c) array, N is bound to NB·K, fixed values
    (the shared pass's) keep the batch NB.  Each op is printed by its
    primitive's ``numpy_batched``; every result is a fresh array."""

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


def _columns_function(derived: Derived) -> dict:
    """``_tangent_columns(x, y, params..., V, first, count, kc)``: H·v for
    count directions (rows first .. of the Hessian when V is None, else the
    rows of V), the forward and backward pass once, then the tangent part
    over kc directions at a time, the directions as extra columns (as in
    the C backend).  NotImplementedError when a primitive of the tangent
    part has no NumPy rule for that."""
    prog = derived.programs["hessian_columns"]
    split = derived.meta["columns_split"]
    n_in = 2 + len(derived.base.params)
    vvars, outs = prog.inputs[n_in:], prog.outputs
    tangent = prog.ops[split:]
    batched = set(vvars) | {op.out for op in tangent}
    needed = sorted({a for op in tangent for a in op.args
                     if a not in batched and a not in prog.inputs})
    head = _HeadEmitter(dataclasses.replace(prog, ops=prog.ops[:split], outputs=needed),
                        derived.spec.dtype).blocks()
    em = _BatchedEmitter(dataclasses.replace(prog, ops=tangent), derived.spec.dtype, batched)
    per_dir = em.blocks()
    shapes = [prog.vars[v].shape for v in vvars]
    sizes = [r * c for r, c in shapes]
    total = sum(sizes)
    inner = ["K = min(kc, count - j0)",
             "N = NB*K  # the tangent pass runs on N·K rows: sample n in direction d is "
             "row n·K + d",
             "# the directions: rows j0 .. of V, or the unit vectors e_(first + j0) ..",
             "if V is not None:"]
    off = 0
    for var, (r, c), size in zip(vvars, shapes, sizes):
        inner.append(f"    {var} = _dirs_to_cols(V[j0:j0 + K, {off}:{off + size}], {r}, {c})")
        off += size
    inner.append("else:")
    off = 0
    for var, (r, c), size in zip(vvars, shapes, sizes):
        inner.append(f"    {var} = _unit_dirs(first + j0 - {off}, K, {r}, {c})")
        off += size
    for block in per_dir:
        inner += [""] + [f"# {h}" for h in block["head"]] + block["lines"]
    inner += ["", "# rows j0 .. of the result: H·v for each direction"]
    off = 0
    for var, (r, c), size in zip(outs, shapes, sizes):
        inner.append(f"out[j0:j0 + K, {off}:{off + size}] = _cols_to_dirs({var}, {r}, {c})")
        off += size
    loop = {"head": [f"kc directions at a time: out row j = H·v_j (v_j = e_(first + j), rows "
                     f"first .. first+count-1 of the Hessian, {total} x {total}, or row j of V)"],
            "lines": [f"out = numpy.empty((count, {total}), dtype=DTYPE)", "NB = N  # the batch",
                      "for j0 in range(0, count, kc):"]
            + [("    " + line) if line else "" for line in inner] + ["N = NB"]}
    return {"name": "tangent_columns",
            "args": prog.inputs[:n_in] + ["V", "first", "count", "kc"],
            "returns": ["out"], "pre": [], "blocks": head + [loop]}


def _tangent_bytes(derived: Derived) -> tuple:
    """(a, b): _tangent_columns' tangents take about a*N + b bytes per
    direction (all of them at once, an upper bound)."""
    prog = derived.programs.get("hessian_columns")
    if prog is None:
        return (0, 0)
    split = derived.meta["columns_split"]
    names = set(prog.inputs[2 + len(derived.base.params):]) | {
        op.out for op in prog.ops[split:]}
    a = sum(size_coeffs(prog.vars[n].shape)[0] for n in names)
    b = sum(size_coeffs(prog.vars[n].shape)[1] for n in names)
    item = 4 if derived.spec.dtype == "float32" else 8
    return (a * item, b * item)


def _columns_or_none(derived: Derived):
    try:
        return _columns_function(derived)
    except NotImplementedError:     # the API then takes one hvp per direction
        return None


columns_or_none = _columns_or_none
tangent_bytes = _tangent_bytes
