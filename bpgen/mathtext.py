"""Sentences and equations written once, printed as text or LaTeX.

A tiny expression tree for the prose of ``bpgen show --hessian`` and
``bpgen doc``: every node prints itself in the text notation of
``docs/notation.md`` (``.text()``) and in LaTeX (``.tex()``), so a sentence
is one object and its two printings cannot drift apart.  Graph labels
(``A_l0``) print through :func:`bpgen.equations.tex_label`; an equation a
primitive prints already (text, LaTeX) is a :class:`Raw`.  The assembly ops'
equations (:mod:`bpgen.assembly`) are built of these nodes too.

>>> eq = Eq(Sub("z", "k"), Infix("·", r" \\cdot ", Sub("a", "k-1"), Sub("W", "k")))
>>> eq.text(), eq.tex()
('z_k = a_(k-1)·W_k', 'z_k = a_{k-1} \\\\cdot W_k')
"""
from __future__ import annotations

from .equations import tex_key, tex_label

__all__ = ["Node", "Sym", "Label", "Key", "Raw", "Sub", "At", "Cat", "Infix", "T", "Fn", "Frac",
           "Paren", "Sum", "Eq", "Words", "Sentence", "Item", "sym", "cat"]


class Node:
    """An expression: ``text()`` and ``tex()``."""

    def text(self) -> str:
        raise NotImplementedError

    def tex(self) -> str:
        raise NotImplementedError


def _node(x) -> Node:
    return x if isinstance(x, Node) else Sym(str(x))


class Sym(Node):
    """A symbol: its text and its LaTeX (by default the same)."""

    def __init__(self, text: str, tex: str | None = None):
        self._text, self._tex = text, text if tex is None else tex

    def text(self):
        return self._text

    def tex(self):
        return self._tex


sym = Sym


class Label(Sym):
    """A graph variable's label (``A_l0``, ``Λ_l0`` is not one)."""

    def __init__(self, label: str):
        super().__init__(label, tex_label(label))


class Key(Sym):
    """A parameter key (``l0.W``), typewriter in LaTeX."""

    def __init__(self, key: str):
        super().__init__(key, tex_key(key))


class Raw(Sym):
    """Text and LaTeX another printer made (a primitive, an assembly op)."""


class Cat(Node):
    """Parts side by side; a plain string is the same in both printings."""

    def __init__(self, *parts):
        self.parts = [_node(p) for p in parts]

    def text(self):
        return "".join(p.text() for p in self.parts)

    def tex(self):
        return "".join(p.tex() for p in self.parts)


cat = Cat


class Sub(Node):
    """``base`` with a subscript: ``z_k``, ``a_(k-1)`` (text) / ``a_{k-1}``."""

    def __init__(self, base, index):
        self.base, self.index = _node(base), _node(index)

    def text(self):
        i = self.index.text()
        simple = i.replace("_", "").replace(",", "").isalnum()
        return f"{self.base.text()}_{i}" if simple else f"{self.base.text()}_({i})"

    def tex(self):
        i = self.index.tex()
        return f"{self.base.tex()}_{i}" if len(i) == 1 else f"{self.base.tex()}_{{{i}}}"


class At(Node):
    """``base`` indexed in brackets: a sample ``x[n]``, a block ``H[rows; cols]``
    (LaTeX ``H[rows;\\ cols]``)."""

    def __init__(self, base, *index):
        self.base, self.index = _node(base), [_node(i) for i in index]

    def text(self):
        return f"{self.base.text()}[{'; '.join(i.text() for i in self.index)}]"

    def tex(self):
        return self.base.tex() + "[" + r";\ ".join(i.tex() for i in self.index) + "]"


class Infix(Node):
    """Operands joined by an operator: text ``sep``, LaTeX ``tex_sep``."""

    def __init__(self, sep: str, tex_sep: str, *args):
        self.sep, self.tex_sep, self.args = sep, tex_sep, [_node(a) for a in args]

    def text(self):
        return self.sep.join(a.text() for a in self.args)

    def tex(self):
        return self.tex_sep.join(a.tex() for a in self.args)


class T(Node):
    """A transpose; in LaTeX an operand with a superscript or a space is
    grouped in braces unless ``grouped`` says otherwise."""

    def __init__(self, x, grouped: bool | None = None):
        self.x, self.grouped = _node(x), grouped

    def text(self):
        return self.x.text() + "ᵀ"

    def tex(self):
        inner = self.x.tex()
        grouped = self.grouped
        if grouped is None:
            grouped = "^" in inner or " " in inner.strip()
        return ("{" + inner + "}" if grouped else inner) + r"^{\top}"


class Fn(Node):
    """A function applied: ``diag(x)`` / ``\\operatorname{diag}(x)``."""

    def __init__(self, name, arg, tex_name: str | None = None, big: bool = False):
        self.name = name.text() if isinstance(name, Node) else name
        self.tex_name = tex_name if tex_name is not None else rf"\operatorname{{{name}}}"
        self.arg, self.big = _node(arg), big

    def text(self):
        return f"{self.name}({self.arg.text()})"

    def tex(self):
        if self.big:
            return rf"{self.tex_name}\left({self.arg.tex()}\right)"
        return f"{self.tex_name}({self.arg.tex()})"


class Frac(Node):
    """``a/b`` in text, ``\\frac{a}{b}`` in LaTeX (``inline``: ``a / b``)."""

    def __init__(self, num, den, inline: bool = False):
        self.num, self.den, self.inline = _node(num), _node(den), inline

    def text(self):
        return f"{self.num.text()}/{self.den.text()}"

    def tex(self):
        if self.inline:
            return f"{self.num.tex()} / {self.den.tex()}"
        return rf"\frac{{{self.num.tex()}}}{{{self.den.tex()}}}"


class Paren(Node):
    """Parentheses (``brackets="[]"``: brackets); ``big``: ``\\left( ... \\right)``
    in LaTeX."""

    def __init__(self, x, big: bool = True, brackets: str = "()"):
        self.x, self.big, (self.left, self.right) = _node(x), big, brackets

    def text(self):
        return f"{self.left}{self.x.text()}{self.right}"

    def tex(self):
        if self.big:
            return rf"\left{self.left}{self.x.tex()}\right{self.right}"
        return f"{self.left}{self.x.tex()}{self.right}"


class Sum(Node):
    """``Σ_n body`` / ``\\sum_n body``."""

    def __init__(self, index: str, body):
        self.index, self.body = index, _node(body)

    def text(self):
        return f"Σ_{self.index} {self.body.text()}"

    def tex(self):
        return rf"\sum_{self.index} {self.body.tex()}"


class Eq(Node):
    """``lhs = rhs [= more]``; several side by side (``Eq.list``) are separated
    by a wide space."""

    def __init__(self, *sides):
        self.sides = [_node(s) for s in sides]

    def text(self):
        return " = ".join(s.text() for s in self.sides)

    def tex(self):
        return " = ".join(s.tex() for s in self.sides)

    @staticmethod
    def list(*eqs) -> Node:
        return Infix(",  ", r",\quad ", *eqs)


class Words(Sym):
    """Words inside an equation: ``\\text{...}`` in LaTeX."""

    def __init__(self, words: str):
        super().__init__(words, r"\text{" + words + "}")


class Sentence:
    """Prose with math: plain strings (ASCII, printed as they are) and
    nodes (inline ``$...$`` in LaTeX)."""

    def __init__(self, *parts):
        self.parts = parts

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def tex(self) -> str:
        return "".join(p if isinstance(p, str) else "$" + p.tex() + "$" for p in self.parts)


class Item:
    """One item of a description: ``kind`` "title" or "text" (a
    :class:`Sentence`) or "eq" (a :class:`Node`, with the ``shape`` it
    writes, or "")."""

    def __init__(self, kind: str, body, shape: str = ""):
        self.kind, self.body, self.shape = kind, body, shape

    def text(self) -> str:
        return self.body.text()

    def tex(self) -> str:
        return self.body.tex()
