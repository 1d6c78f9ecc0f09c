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

Everything else (layers, losses, regularisation, the backward pass) is
composed from these, so the chain rule is just the four ``vjp`` rules below.
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
            "out", "out_loss", "out_grad", "out_y", "i", "j", "k", "r", "c",
            "acc", "real", "m"}

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


def dim_str(d) -> str:
    return str(d)


@dataclass
class Var:
    """A matrix value.  ``role``: input, param, target, temp."""
    name: str
    shape: tuple
    role: str = "temp"
    label: str = ""            # how equations show it, e.g. "Z_l0" or "δZ_l0"
    differentiable: bool = False

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name)


@dataclass
class Op:
    prim: str
    out: str
    args: tuple
    attrs: dict = field(default_factory=dict)
    grad_of: int | None = None   # index of the forward op this backward op differentiates
    comment: str = ""            # what this op computes, for emitted code


class Graph:
    """A growing list of ops plus the variables they read and write."""

    def __init__(self):
        self.vars: dict[str, Var] = {}
        self.ops: list[Op] = []
        self.producer: dict[str, int] = {}
        self._grad_of: int | None = None

    # ---- variables -----------------------------------------------------
    def unique(self, base: str) -> str:
        name = base if base.isidentifier() else "t"
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
        self.vars[name] = Var(name, tuple(shape), role, label or name, differentiable)
        return name

    def shape(self, name: str) -> tuple:
        return self.vars[name].shape

    def sym(self, name: str) -> sp.Symbol:
        return sp.Symbol(name)

    # ---- ops --------------------------------------------------------------
    def _emit(self, prim: str, base: str, shape: tuple, args: tuple, attrs: dict,
              label: str = "", comment: str = "") -> str:
        diff = any(self.vars[a].differentiable for a in args) and prim != "rowmax"
        out = self.var(base, shape, "temp", label, diff)
        self.producer[out] = len(self.ops)
        self.ops.append(Op(prim, out, tuple(args), attrs, self._grad_of, comment))
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

    def rowmax(self, a: str, base: str = "m", label: str = "") -> str:
        r, _ = self.shape(a)
        return self._emit("rowmax", base, (r, 1), (a,), {}, label)

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
# Reverse-mode rules, one per primitive.  Each takes the graph, the op and the
# cotangent of its output (a variable name) and returns {arg: cotangent}.

def _vjp_matmul(g: Graph, op: Op, gout: str) -> dict[str, str]:
    a, b = op.args
    ta, tb = op.attrs["ta"], op.attrs["tb"]
    res = {}
    da, db_ = "d_" + a, "d_" + b
    la, lb = "δ" + g.vars[a].label, "δ" + g.vars[b].label
    if g.vars[a].differentiable:
        # C = A B -> dA = dC Bᵀ ; C = Aᵀ B -> dA = B dCᵀ
        if not ta:
            res[a] = g.matmul(gout, b, False, not tb, base=da, label=la)
        else:
            res[a] = g.matmul(b, gout, tb, True, base=da, label=la)
    if g.vars[b].differentiable:
        # C = A B -> dB = Aᵀ dC ; C = A Bᵀ -> dB = dCᵀ A
        if not tb:
            res[b] = g.matmul(a, gout, not ta, False, base=db_, label=lb)
        else:
            res[b] = g.matmul(gout, a, True, ta, base=db_, label=lb)
    return res


def _vjp_map(g: Graph, op: Op, gout: str) -> dict[str, str]:
    expr = op.attrs["expr"]
    out_sym = sp.Symbol(op.out)
    res = {}
    for a in op.args:
        if not g.vars[a].differentiable:
            continue
        d = sp.diff(expr, sp.Symbol(a))
        if d == 0:
            continue
        # write the derivative in terms of the stored output where possible
        # (tanh' = 1 - a**2, sigmoid' = a (1 - a), exp' = exp)
        if not expr.is_Symbol:
            d = d.subs(expr, out_sym)
        full = g.map(sp.Symbol(gout) * d, base="d_" + a, shape=op_shape(g, op),
                     label="δ" + g.vars[a].label)
        res[a] = g.reduce_to(full, g.shape(a), base="d_" + a, label="δ" + g.vars[a].label)
    return res


def op_shape(g: Graph, op: Op) -> tuple:
    return g.shape(op.out)


def _vjp_sum(g: Graph, op: Op, gout: str) -> dict[str, str]:
    (a,) = op.args
    if not g.vars[a].differentiable:
        return {}
    # broadcast the cotangent back to the summed shape
    return {a: g.map(sp.Symbol(gout), base="d_" + a, shape=g.shape(a),
                     label="δ" + g.vars[a].label)}


def _vjp_none(g: Graph, op: Op, gout: str) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Primitive:
    name: str
    vjp: Callable


PRIMITIVES = {
    "matmul": Primitive("matmul", _vjp_matmul),
    "map": Primitive("map", _vjp_map),
    "sum": Primitive("sum", _vjp_sum),
    "rowmax": Primitive("rowmax", _vjp_none),
}


def grad(g: Graph, loss: str, wrt: list[str]) -> dict[str, str]:
    """Append the reverse pass of ``loss`` w.r.t. ``wrt`` to ``g``.

    Returns ``{param var: gradient var}``.  Backward ops record the index of
    the forward op they differentiate in ``Op.grad_of``.
    """
    n_forward = len(g.ops)
    cot: dict[str, list[str]] = {loss: [g.map(sp.Integer(1), base="d_" + loss,
                                              shape=g.shape(loss), label="1")]}
    for idx in range(n_forward - 1, -1, -1):
        op = g.ops[idx]
        if op.out not in cot or not g.vars[op.out].differentiable and op.out != loss:
            continue
        g._grad_of = idx
        gout = _total(g, op.out, cot.pop(op.out))
        for arg, ga in PRIMITIVES[op.prim].vjp(g, op, gout).items():
            cot.setdefault(arg, []).append(ga)
    g._grad_of = None
    out = {}
    for w in wrt:
        if w in cot:
            g._grad_of = None
            out[w] = _total(g, w, cot.pop(w))
        else:
            out[w] = g.map(sp.Integer(0), base="d_" + w, shape=g.shape(w),
                           label="δ" + g.vars[w].label)
    return out


def _total(g: Graph, name: str, parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    for i, p in enumerate(parts):      # the parts are summands of the total
        g.vars[p].label = f"{g.vars[p].label}[{i + 1}]"
    return g.map(sp.Add(*[sp.Symbol(p) for p in parts]), base="d_" + name,
                 shape=g.shape(name), label="δ" + g.vars[name].label)
