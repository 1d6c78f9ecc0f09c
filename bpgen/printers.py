"""Thin SymPy printers: scalar expressions -> NumPy, C99, text and LaTeX.

They differ from SymPy's stock printers only where emitted code needs it:
stable ``sigmoid``/``softplus`` helpers, ``erf`` in NumPy, one-line
``Piecewise``, ``x*x`` for squares, dtype-exact numeric literals, and array
element access in C.
"""
from __future__ import annotations

import sympy as sp
from sympy.codegen.ast import float32, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter


__all__ = ["numeric", "NumpyPrinter", "CPrinter", "EquationPrinter", "latex_expr"]


def numeric(expr: sp.Expr) -> sp.Expr:
    """Replace exact non-integer numbers (1/2, sqrt(2), pi) by 17-digit floats.

    Emitted code then carries plain literals that keep the array dtype
    (a Python float is "weak" in NumPy; ``numpy.sqrt(2)`` is a float64).
    """
    repl = {a: sp.Float(a, 17) for a in expr.atoms(sp.Rational, sp.NumberSymbol)
            if not a.is_Integer}
    return expr.xreplace(repl) if repl else expr


class NumpyPrinter(NumPyPrinter):
    """Prints an elementwise expression whose symbols are NumPy arrays.

    ``access`` maps a symbol name to the expression that reads it (e.g. one
    step of a sequence, ``h[r0:r1]``); other symbols print as their names.
    """

    def __init__(self, settings=None, access=None):
        super().__init__({"fully_qualified_modules": True, **(settings or {})})
        self.access = access or {}

    def _print_Symbol(self, e):
        return self.access.get(e.name, e.name)

    def _print_sigmoid(self, e):
        return f"_sigmoid({self._print(e.args[0])})"

    def _print_softplus(self, e):
        return f"_softplus({self._print(e.args[0])})"

    def _print_erf(self, e):
        return f"_erf({self._print(e.args[0])})"

    def _print_Piecewise(self, e):
        *pairs, last = e.args
        if last.cond != sp.true:
            raise ValueError("Piecewise without an otherwise branch")
        out = self._print(last.expr)
        for val, cond in reversed(pairs):
            out = f"_where({self._print(cond)}, {self._print(val)}, {out})"
        return out

    def _print_Relational(self, e):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[e.rel_op]
        return f"({self._print(e.lhs)} {op} {self._print(e.rhs)})"


class CPrinter(C99CodePrinter):
    """Prints an elementwise expression for one array element in C.

    ``access`` maps a symbol name to the C lvalue of its element, e.g.
    ``{"l0_Z": "l0_Z[i]"}``; ``N`` prints as ``(real)N``.
    """

    def __init__(self, access: dict, dtype: str):
        settings = {"type_aliases": {real: float32}} if dtype == "float32" else {}
        super().__init__(settings)
        self.access = access
        self.suffix = "f" if dtype == "float32" else ""
        #: the C runtime helpers the printed expressions call
        self.helpers: set = set()

    def _print_Symbol(self, e):
        if e.name in self.access:
            return self.access[e.name]
        if e.name == "N":
            return "((real)N)"
        raise ValueError(f"unbound symbol {e.name} in C expression")

    def _print_sigmoid(self, e):
        self.helpers.add("sigmoid")
        return f"bpg_sigmoid({self._print(e.args[0])})"

    def _print_softplus(self, e):
        self.helpers.add("softplus")
        return f"bpg_softplus({self._print(e.args[0])})"

    def _print_Piecewise(self, e):
        *pairs, last = e.args
        out = self._print(last.expr)
        for val, cond in reversed(pairs):
            out = f"(({self._print(cond)}) ? ({self._print(val)}) : ({out}))"
        return out

    def _print_Pow(self, e):
        if e.exp.is_Integer and 2 <= int(e.exp) <= 3:
            b = self.parenthesize(e.base, 1000)
            return "(" + "*".join([b] * int(e.exp)) + ")"
        if e.exp == -1:
            return f"({self._print(sp.Float(1.0))}/{self.parenthesize(e.base, 1000)})"
        return super()._print_Pow(e)


class EquationPrinter(StrPrinter):
    """Text form of an elementwise expression: ⊙ between matrices."""

    def __init__(self, names: dict):
        super().__init__({"order": "none"})
        self.names = names

    def _print_Symbol(self, e):
        return self.names.get(e.name, e.name)

    def _print_Float(self, e):
        return f"{float(e):.6g}"

    def _print_Mul(self, e):
        coeff, rest = e.as_coeff_Mul()
        terms = rest.args if rest.is_Mul else (rest,)
        if coeff == -1:
            return "-" + self._mul(terms)
        if coeff != 1:
            return self._print(coeff) + "·" + self._mul(terms)
        return self._mul(terms)

    def _mul(self, terms):
        parts = []
        for t in terms:
            s = self._print(t)
            if t.is_Add or (t.is_Mul and len(t.args) > 1) or t.is_Piecewise:
                s = f"({s})"
            parts.append(s)
        return " ⊙ ".join(parts)

    def _print_Pow(self, e):
        base = self.parenthesize(e.base, PRECEDENCE["Pow"])
        if e.exp == -1:
            return f"1/{base}"
        if e.exp == 2:
            return f"{base}^∘2"
        return f"{base}^∘{self.parenthesize(e.exp, PRECEDENCE['Pow'])}"

    def _print_Piecewise(self, e):
        parts = [f"{self._print(v)} if {self._print(c)}" for v, c in e.args[:-1]]
        parts.append(f"{self._print(e.args[-1].expr)} otherwise")
        return "[" + "; ".join(parts) + "]"

    def _print_sigmoid(self, e):
        return f"σ({self._print(e.args[0])})"


def latex_expr(expr: sp.Expr, names: dict) -> str:
    """LaTeX for an elementwise expression, with symbols renamed."""
    subs = {sp.Symbol(k): sp.Symbol(v) for k, v in names.items()}
    return sp.latex(expr.xreplace(subs), mul_symbol="dot").replace(r"\cdot", r"\odot")
