"""Matrix-form equations of ops, as text (code comments, ``bpgen show``) or
LaTeX; each primitive writes its own right-hand side."""
from __future__ import annotations

from .ir import Op
from .primitives import PRIMITIVES

__all__ = ["op_equation", "op_rhs"]


def op_rhs(op: Op, names: dict, latex: bool = False) -> str:
    """The right-hand side of ``op`` in matrix notation."""
    return PRIMITIVES[op.prim].equation(op, names, latex)


def op_equation(op: Op, names: dict | None = None, latex: bool = False) -> str:
    names = names or {}
    return f"{names.get(op.out, op.out)} = {op_rhs(op, names, latex)}"
