"""The intermediate representation: a graph of matrix operations.

Every value is a 2-D matrix whose shape is ``(rows, cols)``; a dimension is an
``int`` or the string ``"N"`` (the batch size, free at call time).  A program
is a list of :class:`Op` over a handful of primitives, each of which keeps all
of its rules in one place (shape, reverse-mode rule, equation):

``matmul``   C = op(A) op(B), op = identity or transpose
``map``      C = f(A, B, ...) elementwise, with row/column/scalar broadcasting;
             ``f`` is a SymPy scalar expression whose symbols are the
             argument names (and ``N``), so SymPy differentiates it
``sum``      column sums (axis 0, ``1ᵀ A``), row sums (axis 1, ``A 1``) or all
``rowmax``   the maximum of each row; it carries no gradient, and is only used
             where the result does not depend on it (the shift of a
             log-sum-exp)

Structural primitives move blocks around: ``cols``/``place_cols``/``concat``
(column blocks, e.g. the gates of an LSTM) and ``rows``/``place_rows`` (the
blocks of N rows that hold one time step).

Everything else (layers, losses, regularisation, the backward pass) is
composed from these, so the chain rule is just the ``vjp`` rules below.

Sequences and loops.  A sequence of T steps is stored time-major as a
``(T*N, cols)`` matrix whose rows ``t*N .. t*N+N-1`` are step t (its row
dimension is the string ``"T*N"``, e.g. ``"5*N"``).  Ops created between
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

import keyword
from dataclasses import dataclass, field
from typing import Callable

import sympy as sp

__all__ = ["Var", "Op", "Graph", "NSYM", "broadcast_shape", "PRIMITIVES"]

NSYM = sp.Symbol("N", positive=True, integer=True)
# names the emitted code uses for its own purposes (x and y are the graph's
# first two variables and keep their names)
RESERVED = {"N", "numpy", "np", "ws", "lib", "ffi", "math", "params", "v",
            "out", "out_loss", "out_grad", "out_y", "out_hv", "out_f", "i", "j", "k",
            "r", "c", "acc", "real", "m", "t", "it", "q", "q0", "q1", "r0", "r1", "rr",
            "cc", "size_t", "int64_t", "DTYPE"}

Dim = "int | str"


def broadcast_shape(shapes) -> tuple:
    rows, cols = 1, 1
    for r, c in shapes:
        if r != 1:
            if rows != 1 and rows != r:
                raise ValueError(f"shape mismatch in broadcast: {shapes}")
            rows = r
        if c != 1:
            if cols != 1 and cols != c:
                raise ValueError(f"shape mismatch in broadcast: {shapes}")
            cols = c
    return (rows, cols)


def seq_dim(steps: int) -> str:
    """The row dimension of a time-major sequence of ``steps`` steps."""
    return f"{steps}*N"


def dim_coeffs(d) -> tuple:
    """A dimension as (a, b) meaning a*N + b."""
    if isinstance(d, int):
        return (0, d)
    if d == "N":
        return (1, 0)
    k, n = d.split("*")
    assert n == "N", d
    return (int(k), 0)


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


class Graph:
    """A growing list of ops plus the variables they read and write."""

    def __init__(self):
        self.vars: dict[str, Var] = {}
        self.ops: list[Op] = []
        self.producer: dict[str, int] = {}
        self._grad_of: str | None = None
        self.loops: dict[int, dict] = {}    # id -> {"steps", "reverse", "seq"}
        self.grad_parts: dict[str, list] = {}  # wrt var -> its gradient's summands
        self.cotangents: dict[str, str] = {}   # var -> its total cotangent (non-loop)
        self.layer_vars: dict[str, dict] = {}  # layer name -> its input, Z, A
        self.loop: int | None = None       # the loop being built

    # ---- loops --------------------------------------------------------------
    def loop_begin(self, steps: int, reverse: bool = False, label: str = "") -> int:
        """Start a loop over ``steps`` time steps (descending when ``reverse``)."""
        if self.loop is not None:
            raise ValueError("loops do not nest")
        lid = len(self.loops)
        order = f"t = {steps - 1} .. 0" if reverse else f"t = 0 .. {steps - 1}"
        self.loops[lid] = {"steps": steps, "reverse": reverse, "seq": seq_dim(steps),
                           "label": label, "title": f"{label}, {order}" if label else order}
        self.loop = lid
        return lid

    def loop_end(self) -> None:
        self.loop = None

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
            shape = (self.loops[loop]["seq"], shape[1])
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
    def _emit(self, prim: str, base: str, shape: tuple, args: tuple, attrs: dict,
              label: str = "", comment: str = "") -> str:
        diff = any(self.vars[a].differentiable for a in args) and prim != "rowmax"
        out = self.var(base, shape, "temp", label, diff)
        self.producer[out] = len(self.ops)
        self.ops.append(Op(prim, out, tuple(args), attrs, self._grad_of, comment,
                           self.loop))
        return out

    def matmul(self, a: str, b: str, ta: bool = False, tb: bool = False,
               base: str = "mm", label: str = "", comment: str = "") -> str:
        sa, sb = self.shape(a), self.shape(b)
        m, k1 = (sa[1], sa[0]) if ta else sa
        k2, n = (sb[1], sb[0]) if tb else sb
        if k1 != k2:
            raise ValueError(f"matmul shape mismatch: {a}{sa} {b}{sb} ta={ta} tb={tb}")
        return self._emit("matmul", base, (m, n), (a, b), {"ta": ta, "tb": tb},
                          label, comment)

    def map(self, expr: sp.Expr, base: str = "t", shape: tuple | None = None,
            label: str = "", comment: str = "") -> str:
        """Elementwise ``expr`` over the variables named by its symbols.

        Returns an existing variable when ``expr`` is just that variable (no
        op is needed), so callers can compose freely.
        """
        expr = sp.sympify(expr)
        args = tuple(sorted(s.name for s in expr.free_symbols if s.name in self.vars))
        shapes = [self.shape(a) for a in args]
        if shape is None:
            shape = broadcast_shape(shapes) if shapes else (1, 1)
        else:
            shape = tuple(shape)
            if shapes:
                broadcast_shape(shapes + [shape])
                if broadcast_shape(shapes + [shape]) != shape:
                    raise ValueError(f"map arguments {shapes} do not broadcast to {shape}")
        if isinstance(expr, sp.Symbol) and expr.name in self.vars \
                and self.shape(expr.name) == shape:
            return expr.name
        return self._emit("map", base, shape, args, {"expr": expr}, label, comment)

    def sum(self, a: str, axis: int | None, base: str = "s", label: str = "",
            comment: str = "") -> str:
        r, c = self.shape(a)
        shape = {0: (1, c), 1: (r, 1), None: (1, 1)}[axis]
        if shape == (r, c):
            return a
        return self._emit("sum", base, shape, (a,), {"axis": axis}, label, comment)

    def copy(self, a: str, base: str = "copy") -> str:
        """A fresh variable holding ``a`` (for outputs that must not alias inputs)."""
        return self._emit("map", base, self.shape(a), (a,), {"expr": sp.Symbol(a)},
                          self.vars[a].label)

    def rowmax(self, a: str, base: str = "m", label: str = "") -> str:
        r, _ = self.shape(a)
        return self._emit("rowmax", base, (r, 1), (a,), {}, label)

    def cols(self, a: str, start: int, stop: int, base: str = "c", label: str = "") -> str:
        """Columns ``start:stop`` of ``a``."""
        r, c = self.shape(a)
        if not 0 <= start < stop <= c:
            raise ValueError(f"cols {start}:{stop} out of range for {a} {(r, c)}")
        if (start, stop) == (0, c):
            return a
        return self._emit("cols", base, (r, stop - start), (a,),
                          {"start": start, "stop": stop}, label)

    def place_cols(self, a: str, start: int, total: int, base: str = "c",
                   label: str = "") -> str:
        """``a`` placed at columns ``start:`` of a zero matrix ``total`` wide."""
        r, c = self.shape(a)
        if (start, c) == (0, total):
            return a
        return self._emit("place_cols", base, (r, total), (a,),
                          {"start": start, "stop": start + c, "total": total}, label)

    def concat(self, parts: list, base: str = "cat", label: str = "") -> str:
        """Column-wise concatenation [A, B, ...] of matrices with equal rows."""
        if len(parts) == 1:
            return parts[0]
        rows = {self.shape(p)[0] for p in parts}
        if len(rows) != 1:
            raise ValueError(f"concat of different row counts: {parts}")
        width = sum(self.shape(p)[1] for p in parts)
        return self._emit("concat", base, (rows.pop(), width), tuple(parts), {}, label)

    def rows(self, a: str, block: int, base: str = "r", label: str = "") -> str:
        """Step ``block`` (rows block*N .. block*N+N-1) of the sequence ``a``."""
        r, c = self.shape(a)
        steps, _ = dim_coeffs(r)
        if not 0 <= block < steps or dim_coeffs(r)[1]:
            raise ValueError(f"rows: step {block} out of range for {a} {(r, c)}")
        return self._emit("rows", base, ("N", c), (a,), {"block": block, "steps": steps},
                          label)

    def place_rows(self, a: str, block: int, steps: int, base: str = "r",
                   label: str = "") -> str:
        """``a`` (N rows) placed at step ``block`` of a zero sequence of ``steps``."""
        r, c = self.shape(a)
        return self._emit("place_rows", base, (seq_dim(steps), c), (a,),
                          {"block": block, "steps": steps}, label)

    def state(self, shape: tuple, base: str = "prev", label: str = "") -> str:
        """A recurrent state read: the value, at the previous iteration of the
        current loop, of a loop variable bound later with :meth:`bind_state`
        (zero at the first iteration)."""
        if self.loop is None:
            raise ValueError("state() outside a loop")
        out = self._emit("prev", base, tuple(shape), (), {}, label)
        self.vars[out].differentiable = True
        return out

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

    def cut(self, a: str, every: int, forward_reverse: bool, base: str = "cut",
            label: str = "") -> str:
        """``a``, but zero at the iterations whose forward step index is a
        multiple of ``every`` (the truncated-BPTT boundaries)."""
        return self._emit("cut", base, self.shape(a), (a,),
                          {"every": every, "forward_reverse": forward_reverse}, label)

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


# ---------------------------------------------------------------------------
# Reverse-mode rules, one per primitive.  Each takes the graph, the op, the
# cotangent of its output (a variable name) and the arguments wanted (None:
# all differentiable ones), and returns {arg: cotangent}.

def _wanted(g: Graph, a: str, only) -> bool:
    return g.vars[a].differentiable and (only is None or a in only)


def _vjp_matmul(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    a, b = op.args
    ta, tb = op.attrs["ta"], op.attrs["tb"]
    res = {}
    da, db_ = "d_" + a, "d_" + b
    la, lb = "δ" + g.vars[a].label, "δ" + g.vars[b].label
    if _wanted(g, a, only):
        # C = A B -> dA = dC Bᵀ ; C = Aᵀ B -> dA = B dCᵀ
        if not ta:
            res[a] = g.matmul(gout, b, False, not tb, base=da, label=la)
        else:
            res[a] = g.matmul(b, gout, tb, True, base=da, label=la)
    if _wanted(g, b, only):
        # C = A B -> dB = Aᵀ dC ; C = A Bᵀ -> dB = dCᵀ A
        if not tb:
            res[b] = g.matmul(a, gout, not ta, False, base=db_, label=lb)
        else:
            res[b] = g.matmul(gout, a, True, ta, base=db_, label=lb)
    return res


def _vjp_map(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    expr = op.attrs["expr"]
    out_sym = sp.Symbol(op.out)
    res = {}
    for a in op.args:
        if not _wanted(g, a, only):
            continue
        d = sp.diff(expr, sp.Symbol(a))
        if d == 0:
            continue
        # write the derivative in terms of the stored output where possible
        # (tanh' = 1 - a**2, sigmoid' = a (1 - a), exp' = exp)
        if not expr.is_Symbol:
            d = d.subs(expr, out_sym)
        full = g.map(sp.Symbol(gout) * d, base="d_" + a, shape=g.shape(op.out),
                     label="δ" + g.vars[a].label)
        res[a] = g.reduce_to(full, g.shape(a), base="d_" + a, label="δ" + g.vars[a].label)
    return res


def _vjp_sum(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    (a,) = op.args
    if not _wanted(g, a, only):
        return {}
    # broadcast the cotangent back to the summed shape
    return {a: g.map(sp.Symbol(gout), base="d_" + a, shape=g.shape(a),
                     label="δ" + g.vars[a].label)}


def _vjp_none(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    return {}


def _vjp_cols(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    (a,) = op.args
    if not _wanted(g, a, only):
        return {}
    return {a: g.place_cols(gout, op.attrs["start"], g.shape(a)[1], base="d_" + a,
                            label="δ" + g.vars[a].label)}


def _vjp_place_cols(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    (a,) = op.args
    if not _wanted(g, a, only):
        return {}
    return {a: g.cols(gout, op.attrs["start"], op.attrs["stop"], base="d_" + a,
                      label="δ" + g.vars[a].label)}


def _vjp_concat(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    res, start = {}, 0
    for a in op.args:
        width = g.shape(a)[1]
        if _wanted(g, a, only):
            res[a] = g.cols(gout, start, start + width, base="d_" + a,
                            label="δ" + g.vars[a].label)
        start += width
    return res


def _vjp_rows(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    (a,) = op.args
    if not _wanted(g, a, only):
        return {}
    return {a: g.place_rows(gout, op.attrs["block"], op.attrs["steps"], base="d_" + a,
                            label="δ" + g.vars[a].label)}


def _vjp_place_rows(g: Graph, op: Op, gout: str, only=None) -> dict[str, str]:
    (a,) = op.args
    if not _wanted(g, a, only):
        return {}
    return {a: g.rows(gout, op.attrs["block"], base="d_" + a, label="δ" + g.vars[a].label)}


# ---------------------------------------------------------------------------
# Forward-mode (tangent, R-operator) rules, one per primitive.  Each takes the
# graph, the op and {var: tangent var} (absent: zero) and returns the
# tangent of the op's output, or None when it is zero.

def _tname(g: Graph, op: Op) -> tuple:
    return "r_" + op.out, "R{" + g.vars[op.out].label + "}"


def _jvp_matmul(g: Graph, op: Op, t: dict):
    a, b = op.args
    ta, tb = op.attrs["ta"], op.attrs["tb"]
    base, label = _tname(g, op)
    parts = []
    both = a in t and b in t
    if a in t:      # R{A B} = R{A} B + A R{B}
        parts.append(g.matmul(t[a], b, ta, tb, base=base + "_a",
                              label=label + ("[1]" if both else "")))
    if b in t:
        parts.append(g.matmul(a, t[b], ta, tb, base=base + "_b",
                              label=label + ("[2]" if both else "")))
    if not parts:
        return None
    return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base=base, label=label)


def _jvp_map(g: Graph, op: Op, t: dict):
    expr = op.attrs["expr"]
    terms = []
    for a in op.args:
        if a not in t:
            continue
        d = sp.diff(expr, sp.Symbol(a))
        if d == 0:
            continue
        if not expr.is_Symbol:
            d = d.subs(expr, sp.Symbol(op.out))
        terms.append(d * sp.Symbol(t[a]))
    if not terms:
        return None
    base, label = _tname(g, op)
    return g.map(sp.Add(*terms), base=base, shape=g.shape(op.out), label=label)


def _jvp_unary(build):
    def rule(g: Graph, op: Op, t: dict):
        (a,) = op.args
        if a not in t:
            return None
        base, label = _tname(g, op)
        return build(g, op, t[a], base, label)
    return rule


def _jvp_concat(g: Graph, op: Op, t: dict):
    if not any(a in t for a in op.args):
        return None
    base, label = _tname(g, op)
    parts = [t[a] if a in t else g.map(sp.Integer(0), base="zeros", shape=g.shape(a))
             for a in op.args]
    return g.concat(parts, base=base, label=label)


@dataclass(frozen=True)
class Primitive:
    name: str
    vjp: Callable
    jvp: Callable


PRIMITIVES = {
    "matmul": Primitive("matmul", _vjp_matmul, _jvp_matmul),
    "map": Primitive("map", _vjp_map, _jvp_map),
    "sum": Primitive("sum", _vjp_sum, _jvp_unary(
        lambda g, op, ta, base, label: g.sum(ta, op.attrs["axis"], base=base, label=label))),
    # the row maximum only shifts a log-sum-exp, which does not depend on it
    "rowmax": Primitive("rowmax", _vjp_none, lambda g, op, t: None),
    "cols": Primitive("cols", _vjp_cols, _jvp_unary(
        lambda g, op, ta, base, label: g.cols(ta, op.attrs["start"], op.attrs["stop"],
                                              base=base, label=label))),
    "place_cols": Primitive("place_cols", _vjp_place_cols, _jvp_unary(
        lambda g, op, ta, base, label: g.place_cols(ta, op.attrs["start"],
                                                    op.attrs["total"], base=base,
                                                    label=label))),
    "concat": Primitive("concat", _vjp_concat, _jvp_concat),
    "rows": Primitive("rows", _vjp_rows, _jvp_unary(
        lambda g, op, ta, base, label: g.rows(ta, op.attrs["block"], base=base,
                                              label=label))),
    "place_rows": Primitive("place_rows", _vjp_place_rows, _jvp_unary(
        lambda g, op, ta, base, label: g.place_rows(ta, op.attrs["block"],
                                                    op.attrs["steps"], base=base,
                                                    label=label))),
    "cut": Primitive("cut", _vjp_none, _jvp_unary(
        lambda g, op, ta, base, label: g.cut(ta, op.attrs["every"],
                                             op.attrs["forward_reverse"], base=base,
                                             label=label))),
    # prev (recurrent state) is differentiated by grad() and tangents()
    # themselves, loop-wise
}


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
        g.loop, g._grad_of = op.loop, op.grad_of
        if op.prim == "prev":
            base, label = _tname(g, op)
            state = g.state(g.shape(op.out), base=base, label=label)
            g.vars[state].differentiable = False
            t[op.out] = state
            if op.args:
                waiting.setdefault(op.args[0], []).append(state)
        else:
            tv = PRIMITIVES[op.prim].jvp(g, op, t)
            if tv is not None:
                t[op.out] = tv
        for state in waiting.pop(op.out, []):   # a state's source follows its read
            g.bind_state(state, t.get(op.out))
    assert not waiting, f"state reads of undefined variables: {sorted(waiting)}"
    g.loop, g._grad_of = None, None
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
            g._grad_of = op.out
            gout = _total(g, op.out, cot.pop(op.out))
            g.cotangents[op.out] = gout
            for arg, ga in PRIMITIVES[op.prim].vjp(g, op, gout).items():
                cot.setdefault(arg, []).append(ga)
        idx -= 1
    g._grad_of = None
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
    seq = info["seq"]
    g.loop_begin(info["steps"], reverse=not info["reverse"],
                 label=f"backward through {info['label'] or 'loop'}")
    carries = {}
    for i in indices:
        op = g.ops[i]
        if op.prim == "prev" and g.vars[op.args[0]].differentiable:
            # the state's cotangent arrives from the iteration before, i.e.
            # from the next time step of the forward loop
            g._grad_of = op.out
            src = op.args[0]
            carries[i] = g.state(g.shape(src), base="carry_" + src,
                                 label="δ" + g.vars[src].label + "(next)")
            cot.setdefault(src, []).append(carries[i])
    deferred = []
    for i in reversed(indices):
        op = g.ops[i]
        g._grad_of = op.out
        if op.prim == "prev":
            if i not in carries:
                continue
            d = None      # None: no gradient reaches the state, the carry is zero
            parts = cot.pop(op.out, [])
            if parts:
                d = _total(g, op.out, parts)
                if truncate:
                    d = g.cut(d, truncate, info["reverse"], base="d_" + op.out + "_cut",
                              label=g.vars[d].label + "(cut)")
            g.bind_state(carries[i], d)
            continue
        if op.out not in cot or not g.vars[op.out].differentiable:
            continue
        gout = _total(g, op.out, cot.pop(op.out))
        per_step = {a for a in op.args if g.vars[a].shape[0] == seq}
        for arg, ga in PRIMITIVES[op.prim].vjp(g, op, gout, only=per_step).items():
            cot.setdefault(arg, []).append(ga)
        outer = [a for a in op.args if a not in per_step and g.vars[a].differentiable]
        if outer:
            deferred.append((i, op, gout, set(outer)))
    g.loop_end()
    # parameters: every step's contribution at once, over whole sequences
    for i, op, gout, outer in deferred:
        g._grad_of = op.out
        for arg, ga in PRIMITIVES[op.prim].vjp(g, op, gout, only=outer).items():
            cot.setdefault(arg, []).append(ga)
    g._grad_of = None


def _total(g: Graph, name: str, parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    shape = g.shape(name)
    ops = [g.ops[g.producer[p]] if p in g.producer else None for p in parts]
    if all(o is not None and o.prim == "place_cols" and o.loop == g.loop for o in ops):
        # column blocks of one matrix (e.g. LSTM gates): concatenate, no sums
        spans = sorted((o.attrs["start"], o.attrs["stop"], o.args[0]) for o in ops)
        if all(a[1] <= b[0] for a, b in zip(spans, spans[1:])):
            pieces, pos = [], 0
            for start, stop, src in spans:
                if start > pos:
                    pieces.append(g.map(sp.Integer(0), base="zeros", shape=(shape[0], start - pos)))
                pieces.append(src)
                pos = stop
            if pos < shape[1]:
                pieces.append(g.map(sp.Integer(0), base="zeros", shape=(shape[0], shape[1] - pos)))
            return g.concat(pieces, base="d_" + name, label="δ" + g.vars[name].label)
    for i, p in enumerate(parts):      # the parts are summands of the total
        g.vars[p].label = f"{g.vars[p].label}[{i + 1}]"
    return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base="d_" + name,
                 shape=shape, label="δ" + g.vars[name].label)
