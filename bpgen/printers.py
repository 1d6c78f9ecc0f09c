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
from sympy.printing.latex import LatexPrinter
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
        # with an array among the values numpy.where keeps its dtype; with
        # numbers alone _where makes the result DTYPE
        where = "numpy.where" if any(self._array(p.expr) for p in e.args) else "_where"
        for val, cond in reversed(pairs):
            out = f"{where}({self._print(cond)}, {self._print(val)}, {out})"
        return out

    def _array(self, e) -> bool:
        """Does ``e`` read an array (not just numbers and N)?"""
        return any(s.name in self.access for s in e.free_symbols)

    @staticmethod
    def _mask(e):
        """The condition c of where(c, 1, 0), else None."""
        if (isinstance(e, sp.Piecewise) and len(e.args) == 2 and e.args[0].expr == 1
                and e.args[1].expr == 0 and e.args[1].cond == sp.true):
            return e.args[0].cond
        return None

    def _split_mask(self, e):
        """A product ``rest ⊙ where(c, 1, 0)`` with an array in ``rest`` as
        (rest, c): printed ``rest*(c)``, a product with a boolean array."""
        if not e.is_Mul:
            return None
        masks = [a for a in e.args if self._mask(a) is not None]
        if len(masks) != 1:
            return None
        rest = sp.Mul(*[a for a in e.args if a is not masks[0]])
        return (rest, self._mask(masks[0])) if self._array(rest) else None

    def _print_Mul(self, e):
        split = self._split_mask(e)
        if split is None:
            return super()._print_Mul(e)
        rest, cond = split
        return f"{self.parenthesize(rest, PRECEDENCE['Mul'])}*{self._print(cond)}"

    def _print_Relational(self, e):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[e.rel_op]
        return f"({self._print(e.lhs)} {op} {self._print(e.rhs)})"

    #: SymPy functions printed as the NumPy ufunc of that name (with ``out=``)
    UFUNCS = {"tanh": "tanh", "exp": "exp", "log": "log", "sin": "sin", "cos": "cos",
              "Abs": "absolute"}

    def can_into(self, e) -> bool:
        """Has ``e`` an outermost operation that :meth:`into` writes with ``out=``?"""
        if e.is_Add or e.is_Mul:
            return True
        if e.is_Pow:
            return e.exp in (2, -1, sp.Rational(1, 2), sp.Float(0.5))
        name = type(e).__name__
        return (name in self.UFUNCS and len(e.args) == 1) or name in ("sigmoid", "softplus")

    def into(self, e, dst: str):
        """``e`` written into the array ``dst`` by its outermost operation
        (a ufunc call with ``out=dst``), or None when that operation has no
        such form.  The operands are evaluated before the call, so ``dst``
        may be one of them."""
        def p(x):               # numbers as the shortest literal that reads back the same
            return repr(float(x)) if x.is_Float else self._print(x)

        def first(args):        # dst itself first (in place), else the first array
            args = list(args)
            for k, a in enumerate(args):
                if a.is_Symbol and p(a) == dst:
                    return args.pop(k), args
            for k, a in enumerate(args):
                if not a.is_Number:
                    return args.pop(k), args
            return args.pop(0), args

        if e.is_Add:
            terms = list(e.args)
            pos = [t for t in terms if not t.could_extract_minus_sign()]
            a, _ = first(pos or terms)
            terms.remove(a)
            b = sp.Add(*terms)
            if b.could_extract_minus_sign():
                return f"numpy.subtract({p(a)}, {p(-b)}, out={dst})"
            return f"numpy.add({p(a)}, {p(b)}, out={dst})"
        if e.is_Mul and self._split_mask(e) is not None:
            rest, cond = self._split_mask(e)
            return f"numpy.multiply({p(rest)}, {p(cond)}, out={dst})"
        if e.is_Mul:
            num, den = sp.fraction(e, exact=True)
            if den != 1:
                return f"numpy.divide({p(num)}, {p(den)}, out={dst})"
            if e.could_extract_minus_sign() and e.args[0] == -1:
                return f"numpy.negative({p(-e)}, out={dst})"
            a, rest = first(e.args)
            return f"numpy.multiply({p(a)}, {p(sp.Mul(*rest))}, out={dst})"
        if e.is_Pow:
            if e.exp == 2:
                return f"numpy.square({p(e.base)}, out={dst})"
            if e.exp == -1:
                return f"numpy.divide(1, {p(e.base)}, out={dst})"
            if e.exp == sp.Rational(1, 2) or e.exp == sp.Float(0.5):
                return f"numpy.sqrt({p(e.base)}, out={dst})"
            return None
        name = type(e).__name__
        if name in self.UFUNCS and len(e.args) == 1:
            return f"numpy.{self.UFUNCS[name]}({p(e.args[0])}, out={dst})"
        if name == "sigmoid":
            return f"_sigmoid({p(e.args[0])}, out={dst})"
        if name == "softplus":
            return f"numpy.logaddexp(0, {p(e.args[0])}, out={dst})"
        return None


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

    def _print_exp(self, e):
        self.helpers.add("exp")      # runtime/exp.c: no slow vectors for exp(-inf)
        return f"bpg_exp({self._print(e.args[0])})"

    def _print_tanh(self, e):
        self.helpers.add("tanh")
        return f"bpg_tanh({self._print(e.args[0])})"

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
        # layernorm's (var + eps)^(-1/2) and its derivatives' ^(-3/2): a square
        # root and a division, several times faster than pow()
        # (the exponent is a float here: see numeric)
        power = float(e.exp) if e.exp.is_Number else None
        if power in (-0.5, -1.5, 1.5):
            root = self._print(sp.sqrt(e.base))
            b = self.parenthesize(e.base, 1000)
            one = self._print(sp.Float(1.0))
            return {-0.5: f"({one}/{root})", -1.5: f"({one}/({b}*{root}))",
                    1.5: f"({b}*{root})"}[power]
        return super()._print_Pow(e)


def _scalar(f) -> bool:
    """A factor that is a scalar in every equation: a number or the batch size N."""
    return all(x.name == "N" for x in f.free_symbols)


def _split(e):
    """A product as (coefficient, numerator factors, denominator factors):
    the factors with a negative exponent go below the fraction bar."""
    coeff, rest = e.as_coeff_Mul()
    num, den = [], []
    for f in sp.Mul.make_args(rest):
        if f.is_Pow and f.exp.is_Number and f.exp < 0:
            den.append(f.base if f.exp == -1 else sp.Pow(f.base, -f.exp))
        else:
            num.append(f)
    if coeff.is_Rational and not coeff.is_Integer:
        if coeff.q != 1:
            den.insert(0, sp.Integer(coeff.q))
        coeff = sp.Integer(coeff.p)
    return coeff, num, den


class EquationPrinter(StrPrinter):
    """Text form of an elementwise expression (docs/notation.md): ⊙ between
    matrices, a scalar written before what it multiplies (``2 A``), ``/``
    elementwise division, ``^∘2`` an elementwise power, ``where(c, a, b)``
    an elementwise choice."""

    def __init__(self, names: dict):
        super().__init__({"order": "none"})
        self.names = names

    def _print_Symbol(self, e):
        return self.names.get(e.name, e.name)

    def _print_Float(self, e):
        return f"{float(e):.6g}"

    def _factors(self, factors, one: bool) -> str:
        parts, scalars = [], []
        for t in factors:
            s = self._print(t)
            if t.is_Add or (t.is_Mul and len(t.args) > 1) or (t.is_Number and t.is_negative):
                s = f"({s})"
            (scalars if _scalar(t) else parts).append(s)
        body = " ⊙ ".join(parts)
        if scalars:
            body = " ".join(scalars + ([body] if body else []))
        return body or ("1" if one else "")

    def _print_Mul(self, e):
        if e.could_extract_minus_sign():
            return "-" + self._print(-e) if not (-e).is_Add else f"-({self._print(-e)})"
        coeff, num, den = _split(e)
        if coeff != 1:
            num = [coeff] + num
        top = self._factors(num, one=True)
        if not den:
            return top
        bottom = self._factors(den, one=False)
        if len(den) > 1:
            bottom = f"({bottom})"
        return f"{top} / {bottom}"

    def _print_Pow(self, e):
        if e.exp.is_Number and e.exp < 0:
            return self._print_Mul(e)
        if e.exp == sp.Rational(1, 2):
            return f"sqrt({self._print(e.base)})"
        base = self.parenthesize(e.base, PRECEDENCE["Pow"])
        if e.exp.is_Integer:
            return f"{base}^∘{e.exp}"
        return f"{base}^∘({self._print(e.exp)})"

    def _print_Piecewise(self, e):
        *pairs, last = e.args
        out = self._print(last.expr)
        for val, cond in reversed(pairs):
            out = f"where({self._print(cond)}, {self._print(val)}, {out})"
        return out

    def _print_sigmoid(self, e):
        return f"σ({self._print(e.args[0])})"


class _LatexPrinter(LatexPrinter):
    """LaTeX of an elementwise expression with the same conventions as
    :class:`EquationPrinter`: ``\\odot`` between matrices, scalars in
    front, ``\\frac`` for elementwise division, ``^{\\circ k}`` for an
    elementwise power; symbols print as ``symbol_names`` says."""

    def __init__(self, names: dict):
        super().__init__({"symbol_names": {sp.Symbol(k): v for k, v in names.items()},
                          "order": "none"})
        self.names = names

    def _print_Symbol(self, e, style="plain"):
        if e.name in self.names:
            return self.names[e.name]
        return super()._print_Symbol(e, style)

    def _print_Float(self, e):
        text = f"{float(e):.6g}"
        if "e" in text:
            mant, exp = text.split("e")
            power = f"10^{{{int(exp)}}}"
            return power if mant == "1" else rf"{mant} \times {power}"
        return text

    def _factors(self, factors, one: bool) -> str:
        parts, scalars = [], []
        for t in factors:
            s = self._print(t)
            if t.is_Add or (t.is_Mul and len(t.args) > 1) or (t.is_Number and t.is_negative):
                s = rf"\left({s}\right)"
            (scalars if _scalar(t) else parts).append(s)
        body = r" \odot ".join(parts)
        if scalars:
            body = r"\,".join(scalars + ([body] if body else []))
        return body or ("1" if one else "")

    def _print_Mul(self, e):
        if e.could_extract_minus_sign():
            inner = self._print(-e)
            return "- " + (rf"\left({inner}\right)" if (-e).is_Add else inner)
        coeff, num, den = _split(e)
        if coeff != 1:
            num = [coeff] + num
        if den and len(num) == 1:     # alone above the bar: no parentheses
            top = self._print(num[0])
        else:
            top = self._factors(num, one=True)
        if not den:
            return top
        return rf"\frac{{{top}}}{{{self._factors(den, one=False)}}}"

    def _print_Pow(self, e, exp=None):
        if e.exp.is_Number and e.exp < 0:
            return self._print_Mul(e)
        if e.exp == sp.Rational(1, 2):
            return rf"\sqrt{{{self._print(e.base)}}}"
        base = self._print(e.base)
        if not (e.base.is_Symbol or e.base.is_Function):
            base = rf"\left({base}\right)"
        return rf"{base}^{{\circ {self._print(e.exp)}}}"

    def _print_sigmoid(self, e, exp=None):
        return rf"\sigma\left({self._print(e.args[0])}\right)"

    def _print_softplus(self, e, exp=None):
        return rf"\operatorname{{softplus}}\left({self._print(e.args[0])}\right)"


def latex_expr(expr: sp.Expr, names: dict) -> str:
    """LaTeX for an elementwise expression; ``names`` maps a symbol's name
    to its LaTeX (other symbols print as SymPy prints them)."""
    return _LatexPrinter(names).doprint(expr)


_PATTERN_SIZES = {"im2col": "C H W k s p", "windows": "C H W k s"}


def pattern_equation(pattern: tuple, arg: str, latex: bool, adjoint: bool = False) -> str:
    """A gather pattern applied to ``arg`` (its adjoint, the scatter, with
    ``adjoint``): ``im2col(X; C=1, H=8, W=8, k=3, s=1, p=1)``,
    ``transpose(A; 64×8 -> 8×64 per sample)``."""
    kind, *sizes = pattern
    if kind == "transpose":
        s, f = sizes
        what = (rf"{s} \times {f} \to {f} \times {s} \text{{ per sample}}" if latex
                else f"{s}×{f} → {f}×{s} per sample")
    elif latex:
        what = ", ".join(f"{n}{{=}}{v}" for n, v in zip(_PATTERN_SIZES[kind].split(), sizes))
    else:
        what = ", ".join(f"{n}={v}" for n, v in zip(_PATTERN_SIZES[kind].split(), sizes))
    if latex:
        head = r"\mathrm{" + kind + "}" + (r"^{\top}" if adjoint else "")
        return rf"{head}\left({arg};\ {what}\right)"
    text = f"{kind}{'ᵀ' if adjoint else ''}({arg}; {what})"
    return text + ("  (each input entry sums the outputs that read it)" if adjoint else "")
