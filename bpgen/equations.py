"""Matrix-form equations of ops, as text (code comments, ``bpgen show``) or LaTeX."""
from __future__ import annotations

from .ir import Op
from .printers import EquationPrinter, latex_expr

__all__ = ["op_equation", "op_rhs"]


def op_rhs(op: Op, names: dict, latex: bool = False) -> str:
    """The right-hand side of ``op`` in matrix notation."""
    if op.prim == "matmul":
        a, b = (names.get(x, x) for x in op.args)
        if latex:
            ta = r"^{\top}" if op.attrs["ta"] else ""
            tb = r"^{\top}" if op.attrs["tb"] else ""
            return f"{a}{ta} {b}{tb}"
        ta = "ᵀ" if op.attrs["ta"] else ""
        tb = "ᵀ" if op.attrs["tb"] else ""
        return f"{a}{ta}·{b}{tb}"
    if op.prim == "map":
        if latex:
            return latex_expr(op.attrs["expr"], names)
        return EquationPrinter(names).doprint(op.attrs["expr"])
    if op.prim == "concat":
        parts = [names.get(x, x) for x in op.args]
        return (r"\left[" + ", ".join(parts) + r"\right]") if latex else "[" + ", ".join(parts) + "]"
    if op.prim == "prev":
        a = names.get(op.args[0], op.args[0]) if op.args else "?"
        return f"{a}(previous iteration; 0 at the first)"
    (a,) = op.args
    a = names.get(a, a)
    if op.prim == "cols":
        return f"{a}[:, {op.attrs['start']}:{op.attrs['stop']}]"
    if op.prim == "place_cols":
        return (f"[0, {a}, 0] (columns {op.attrs['start']}:{op.attrs['stop']} "
                f"of {op.attrs['total']})")
    if op.prim == "rows":
        return f"{a}[step {op.attrs['block']}]"
    if op.prim == "place_rows":
        return f"{a} at step {op.attrs['block']} of {op.attrs['steps']} (zeros elsewhere)"
    if op.prim == "cut":
        return (f"{a}, or 0 where the forward step is a multiple of {op.attrs['every']} "
                f"(truncated BPTT)")
    if op.prim == "sum":
        axis = op.attrs["axis"]
        if latex:
            return {0: rf"\mathbf{{1}}^{{\top}} {a}", 1: rf"{a} \mathbf{{1}}",
                    None: rf"\mathbf{{1}}^{{\top}} {a} \mathbf{{1}}"}[axis]
        return {0: f"1ᵀ·{a}", 1: f"{a}·1", None: f"1ᵀ·{a}·1"}[axis]
    if op.prim == "rowmax":
        return rf"\operatorname{{rowmax}}({a})" if latex else f"rowmax({a})"
    raise ValueError(f"unknown primitive {op.prim}")


def op_equation(op: Op, names: dict | None = None, latex: bool = False) -> str:
    names = names or {}
    lhs = names.get(op.out, op.out)
    return f"{lhs} = {op_rhs(op, names, latex)}"
