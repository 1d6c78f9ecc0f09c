"""The intermediate representation: a graph of matrix operations.

Every value is a 2-D matrix whose shape is ``(rows, cols)``; a dimension is an
``int`` or the string ``"N"`` (the batch size, free at call time).  A program
is a list of :class:`Op` over a handful of primitives, each a class of its
own in :mod:`bpgen.primitives` holding all of its rules (shape, reverse and
forward rule, equation, printing per backend): ``matmul``, ``map``
(elementwise SymPy expression), ``sum``, ``rowmax``, the column blocks
``cols``/``place_cols``/``concat``, the time-step blocks ``rows``/
``place_rows``, the recurrent state read ``prev`` and the truncation ``cut``.
``g.<primitive>(...)`` adds one to the graph.

Everything else (layers, losses, regularisation, the backward pass) is
composed from these, so the chain rule is just the primitives' ``vjp`` rules,
and :func:`grad` / :func:`tangents` below only walk the graph.

Sequences and loops.  A sequence of T steps is stored time-major as a
``(T*N, cols)`` matrix whose rows ``t*N .. t*N+N-1`` are step t (its row
dimension is the string ``"T*N"``, e.g. ``"5*N"``; with ``steps: any`` T is
the symbol T of :mod:`bpgen.shapes`, read from x at call time: ``"T*N"``,
and a loop's ``steps`` is that symbol).  Ops created between
:meth:`Graph.loop_begin` and :meth:`Graph.loop_end` form a loop over the
steps: inside it, every sequence is seen as its current step, an ``(N, cols)``
matrix, and every variable the loop defines is a sequence outside it.  The
``prev`` primitive reads a loop variable at the previous iteration (zero at
the first), which is how recurrent state is carried.  Reverse mode turns a
loop into a loop running the other way: ``prev`` becomes a ``prev`` of the
cotangent (the carried state cotangent), and contributions to parameters
are computed after that loop over whole sequences, as one matrix product
(``dW = Hᵀ·Δ`` summed over all steps at once).
"""
from __future__ import annotations

import contextlib
import functools
import keyword
from dataclasses import dataclass, field

import sympy as sp

from .primitives import PRIMITIVES
from .shapes import broadcast_shape, dim_coeffs, seq_dim

__all__ = ["Var", "Op", "Loop", "Graph", "NSYM", "grad", "tangents", "broadcast_shape", "dim_coeffs",
           "seq_dim", "PRIMITIVES"]

NSYM = sp.Symbol("N", positive=True, integer=True)
# names the emitted code uses for its own purposes (x and y are the graph's
# first two variables and keep their names)
RESERVED = {"N", "T", "numpy", "np", "ws", "lib", "ffi", "math", "params", "v",
            "out", "out_loss", "out_grad", "out_y", "out_hv", "out_f", "i", "j", "k",
            "r", "c", "acc", "real", "m", "t", "it", "q", "q0", "q1", "r0", "r1", "rr",
            "cc", "size_t", "int64_t", "DTYPE",
            # hessian_columns: the directions of a chunk (both backends)
            "K", "NB", "d", "j0", "kc", "V", "first", "count", "vbuf", "wsd", "bscratch"}

Dim = "int | str"


@dataclass
class Var:
    """A matrix value.  ``role``: input, param, target, temp."""
    name: str
    shape: tuple
    role: str = "temp"
    label: str = ""            # how equations show it, e.g. "Z_l0" or "δZ_l0"
    differentiable: bool = False
    loop: int | None = None    # the loop that defines it (it is a sequence outside)

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name)


@dataclass
class Op:
    prim: str
    out: str
    args: tuple
    attrs: dict = field(default_factory=dict)
    grad_of: str | None = None   # output of the forward op this backward op differentiates
    comment: str = ""            # what this op computes, for emitted code
    loop: int | None = None      # the loop this op runs in, if any

    @property
    def primitive(self):
        """The primitive this op applies (what passes and printers ask)."""
        return PRIMITIVES[self.prim]


@dataclass(frozen=True)
class Loop:
    """A loop over the time steps: ``steps`` (an int, or the symbol T of
    ``steps: any``), its direction (``reverse``: t
    runs from steps - 1 down to 0), ``seq`` (the row dimension of its
    sequences, e.g. ``"5*N"``), ``label`` (what it runs, e.g. ``"l0 (lstm)"``)
    and ``backward`` (a loop of the reverse pass: it carries a state's
    gradient back).  Read by attribute; ``loop["steps"]`` also works, and
    ``dict(loop, ...)`` copies it as a plain dict."""
    steps: int
    reverse: bool
    seq: str
    label: str = ""
    backward: bool = False

    @property
    def order(self) -> str:
        """``t = 0 .. 19`` or ``t = 19 .. 0``."""
        last = self.steps - 1
        return f"t = {last} .. 0" if self.reverse else f"t = 0 .. {last}"

    @property
    def title(self) -> str:
        return f"{self.label}, {self.order}" if self.label else self.order

    def keys(self) -> tuple:
        return ("steps", "reverse", "seq", "label", "backward", "title")

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)


class Graph:
    """A growing list of ops plus the variables they read and write."""

    def __init__(self):
        self.vars: dict[str, Var] = {}
        self.ops: list[Op] = []
        self.producer: dict[str, int] = {}
        self._grad_of: str | None = None
        self.loops: dict[int, Loop] = {}    # id -> the loop
        self.grad_parts: dict[str, list] = {}  # wrt var -> its gradient's summands
        self.cotangents: dict[str, str] = {}   # var -> its total cotangent (non-loop)
        # layer name -> what its type's Hessian structure reads (layers.base)
        self.layer_parts: dict[str, object] = {}
        self.loop: int | None = None       # the loop being built
        self.untruncated: set = set()      # loops truncated BPTT leaves alone
        # a sequence input's per-(sample, step) mask, (T*N, 1): 1 at real
        # steps, 0 at padding (``lengths``); None: every step is real.  Set by
        # the network (bpgen.network) before the layers' forward compositions,
        # which read it where padding could reach a real step (a reversed
        # loop's state, see bpgen.layers.recurrent.keep)
        self.mask: str | None = None
        # with a mask and truncated BPTT: (T*N, 1), 0 where a reversed loop's
        # carried cotangent is cut for that sample (its boundaries count from
        # the sample's own last real step), else 1 (see Prev.close_carry)
        self.cut_mask: str | None = None

    # ---- loops --------------------------------------------------------------
    def loop_begin(self, steps: int, reverse: bool = False, label: str = "",
                   backward: bool = False, truncated: bool = True) -> int:
        """Start a loop over ``steps`` time steps (descending when ``reverse``;
        ``backward``: a loop of the reverse pass; ``truncated=False``: a loop
        whose state is not a recurrent cell's, which truncated BPTT leaves
        alone)."""
        if self.loop is not None:
            raise ValueError("loops do not nest")
        lid = len(self.loops)
        self.loops[lid] = Loop(steps, reverse, seq_dim(steps), label, backward)
        if not truncated:
            self.untruncated.add(lid)
        self.loop = lid
        return lid

    def loop_end(self) -> None:
        self.loop = None

    @contextlib.contextmanager
    def deriving(self, key: str | None, loop=False):
        """Ops added inside are part of the derivative of the forward op
        whose output is ``key`` (their ``Op.grad_of``, for the ``Grad of``
        comments); ``loop``, when given, is the loop they are added in."""
        old = self._grad_of, self.loop
        self._grad_of = key
        if loop is not False:
            self.loop = loop
        try:
            yield
        finally:
            self._grad_of = old[0]
            if loop is not False:
                self.loop = old[1]

    # ---- variables -----------------------------------------------------
    def unique(self, base: str) -> str:
        name = base.replace(".", "_")
        if not name.isidentifier():
            name = "tmp"
        if keyword.iskeyword(name):
            name += "_"
        if name in self.vars or name in RESERVED:
            n = 1
            while f"{name}_{n}" in self.vars or f"{name}_{n}" in RESERVED:
                n += 1
            name = f"{name}_{n}"
        return name

    def var(self, base: str, shape: tuple, role: str = "temp", label: str = "",
            differentiable: bool = False) -> str:
        name = self.unique(base)
        shape = tuple(shape)
        loop = self.loop
        if loop is not None:
            # defined per step inside the loop: a sequence outside it
            if shape[0] != "N":
                raise ValueError(f"{name}: a loop variable must have N rows, got {shape}")
            shape = (self.loops[loop].seq, shape[1])
        self.vars[name] = Var(name, shape, role, label or name, differentiable, loop)
        return name

    def shape(self, name: str) -> tuple:
        """The shape of ``name`` where ops are being added: inside a loop a
        sequence is seen as one step."""
        shape = self.vars[name].shape
        if self.loop is not None and shape[0] == self.loops[self.loop]["seq"]:
            return ("N", shape[1])
        return shape

    def sym(self, name: str) -> sp.Symbol:
        return sp.Symbol(name)

    # ---- ops --------------------------------------------------------------
    def emit(self, prim: str, base: str, shape: tuple, args: tuple, attrs: dict,
             label: str = "", comment: str = "") -> str:
        """Append an op of primitive ``prim`` (called by the primitives'
        ``build``, which have checked the shapes) and return its output."""
        diff = PRIMITIVES[prim].differentiable and any(
            self.vars[a].differentiable for a in args)
        out = self.var(base, shape, "temp", label, diff)
        self.producer[out] = len(self.ops)
        self.ops.append(Op(prim, out, tuple(args), attrs, self._grad_of, comment,
                           self.loop))
        return out

    def __getattr__(self, name: str):
        # g.<primitive>(...) builds that primitive (see bpgen.primitives)
        prim = PRIMITIVES.get(name)
        if prim is None:
            raise AttributeError(name)
        return functools.partial(prim.build, self)

    def copy(self, a: str, base: str = "copy") -> str:
        """A fresh variable holding ``a`` (for outputs that must not alias inputs)."""
        return self.emit("map", base, self.shape(a), (a,), {"expr": sp.Symbol(a)},
                         self.vars[a].label)

    def state(self, shape: tuple, base: str = "prev", label: str = "") -> str:
        """A recurrent state read: the value, at the previous iteration of the
        current loop, of a loop variable bound later with :meth:`bind_state`
        (zero at the first iteration)."""
        return PRIMITIVES["prev"].build(self, shape, base=base, label=label)

    def bind_state(self, state: str, source: str | None) -> None:
        """Bind a state read to the loop variable it reads; ``None``: no
        value ever reaches it, and the read is a constant zero."""
        op = self.ops[self.producer[state]]
        if source is None:
            op.prim, op.args, op.attrs = "map", (), {"expr": sp.Integer(0)}
            return
        if self.shape(source) != self.shape(state):
            raise ValueError(f"state {state} {self.shape(state)} bound to {source} "
                             f"{self.shape(source)}")
        op.args = (source,)

    def reduce_to(self, a: str, shape: tuple, base: str = "s", label: str = "") -> str:
        """Sum ``a`` over the axes along which ``shape`` was broadcast."""
        sa = self.shape(a)
        if sa == tuple(shape):
            return a
        if shape == (1, 1):
            return self.sum(a, None, base, label)
        if shape[0] == 1 and sa[0] != 1:
            a = self.sum(a, 0, base, label)
        if shape[1] == 1 and self.shape(a)[1] != 1:
            a = self.sum(a, 1, base, label)
        return a


def tangents(g: Graph, seeds: dict) -> dict:
    """Forward mode over the whole program: interleave, after every op and in
    the same loop, the ops computing its tangent.  ``seeds``: {var: tangent
    input var}.  Returns {var: tangent var} for every var with a nonzero
    tangent.  Applied to a program that already holds the backward pass,
    this is Pearlmutter's R-operator: the tangents of the gradients are the
    Hessian-vector product.
    """
    old = g.ops
    g.ops, g.producer = [], {}
    t = dict(seeds)
    waiting: dict[str, list] = {}       # source var -> its tangent's state reads
    for op in old:
        g.producer[op.out] = len(g.ops)
        g.ops.append(op)
        with g.deriving(op.grad_of, loop=op.loop):
            prim = op.primitive
            if prim.state_read:          # loop-wise: see Prev.state_tangent
                prim.state_tangent(g, op, t, waiting)
            else:
                tv = prim.jvp(g, op, t)
                if tv is not None:
                    t[op.out] = tv
            for state in waiting.pop(op.out, []):   # a state's source follows its read
                g.bind_state(state, t.get(op.out))
    assert not waiting, f"state reads of undefined variables: {sorted(waiting)}"
    return t


def grad(g: Graph, loss: str | None, wrt: list[str], truncate: int | None = None,
         roots: dict | None = None, stop: set | None = None) -> dict[str, str]:
    """Append the reverse pass of ``loss`` w.r.t. ``wrt`` to ``g``.

    Returns ``{param var: gradient var}``.  Backward ops record the index of
    the output of the forward op they differentiate in ``Op.grad_of``.  ``truncate`` = k
    stops the gradient through recurrent state at every k-step boundary.
    ``roots`` ({var: cotangent var}) starts from given cotangents instead of
    the loss (a vector-Jacobian product); ops producing a var in ``stop``
    are not differentiated through.
    """
    n_forward = len(g.ops)
    stop = stop or set()
    if roots is not None:
        cot: dict[str, list[str]] = {v: [c] for v, c in roots.items()}
    else:
        cot = {loss: [g.map(sp.Integer(1), base="d_" + loss, shape=g.shape(loss),
                            label="1")]}
    idx = n_forward - 1
    while idx >= 0:
        op = g.ops[idx]
        if op.loop is not None:
            start = idx
            while start > 0 and g.ops[start - 1].loop == op.loop:
                start -= 1
            if any(op.out in cot for op in g.ops[start:idx + 1]):
                _grad_loop(g, list(range(start, idx + 1)), cot, truncate)
            idx = start - 1
            continue
        if op.out in cot and op.out not in stop and (
                g.vars[op.out].differentiable or op.out == loss):
            with g.deriving(op.out):
                gout = _total(g, op.out, cot.pop(op.out))
                g.cotangents[op.out] = gout
                for arg, ga in op.primitive.vjp(g, op, gout).items():
                    cot.setdefault(arg, []).append(ga)
        idx -= 1
    out = {}
    for w in wrt:
        if w in cot:
            g.grad_parts[w] = list(cot[w])
            out[w] = _total(g, w, cot.pop(w))
        else:
            out[w] = g.map(sp.Integer(0), base="d_" + w, shape=g.shape(w),
                           label="δ" + g.vars[w].label)
    return out


def _grad_loop(g: Graph, indices: list, cot: dict, truncate: int | None) -> None:
    """Reverse mode of one loop: a loop the other way round, then the
    parameter contributions over whole sequences."""
    lid = g.ops[indices[0]].loop
    info = g.loops[lid]
    seq = info.seq
    g.loop_begin(info.steps, reverse=not info.reverse,
                 label=f"backward through {info.label or 'loop'}", backward=True)
    carries = {}          # state read's index -> its carry (see Prev.open_carry)
    for i in indices:
        op = g.ops[i]
        if op.primitive.state_read:
            with g.deriving(op.out):
                carry = op.primitive.open_carry(g, op, info, cot)
            if carry is not None:
                carries[i] = carry
    deferred = []
    for i in reversed(indices):
        op = g.ops[i]
        with g.deriving(op.out):
            if op.primitive.state_read:
                if i in carries:
                    op.primitive.close_carry(g, op, carries[i], cot, info,
                                             None if lid in g.untruncated else truncate, _total)
                continue
            if op.out not in cot or not g.vars[op.out].differentiable:
                continue
            gout = _total(g, op.out, cot.pop(op.out))
            per_step = {a for a in op.args if g.vars[a].shape[0] == seq}
            for arg, ga in op.primitive.vjp(g, op, gout, only=per_step).items():
                cot.setdefault(arg, []).append(ga)
            outer = [a for a in op.args if a not in per_step and g.vars[a].differentiable]
            if outer:
                deferred.append((i, op, gout, set(outer)))
    g.loop_end()
    # parameters: every step's contribution at once, over whole sequences
    for i, op, gout, outer in deferred:
        with g.deriving(op.out):
            for arg, ga in op.primitive.vjp(g, op, gout, only=outer).items():
                cot.setdefault(arg, []).append(ga)


def _total(g: Graph, name: str, parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    shape = g.shape(name)
    ops = [g.ops[g.producer[p]] if p in g.producer else None for p in parts]
    if all(o is not None and o.prim == ops[0].prim and o.loop == g.loop for o in ops):
        # parts a primitive can put together without a sum (column blocks
        # of one matrix, e.g. LSTM gates: see PlaceCols.merge_parts)
        merged = ops[0].primitive.merge_parts(g, name, ops)
        if merged is not None:
            return merged
    # NOTE: the parts' labels are completed here (the graph's labels are
    # changed after their ops were added); the equations read them later
    for i, p in enumerate(parts):      # the parts are summands of the total
        # the k-th summand of δV is δV^(k) (parts with labels of their own keep them)
        g.vars[p].label = (f"{g.vars[p].label}^({i + 1})"
                           if g.vars[p].label == "δ" + g.vars[name].label else g.vars[p].label)
    return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base="d_" + name,
                 shape=shape, label="δ" + g.vars[name].label)
