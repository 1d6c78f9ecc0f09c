"""Matrix-form equations of ops, as text (code comments, ``bpgen show``) or
LaTeX; each primitive writes its own right-hand side.

The notation is the one of ``docs/notation.md``.  Variables are named by
their *labels* (``Z_l0``, ``δW_l1``, ``R{A_l0}``, ``H_l0(t-1)``,
``δXG_l0^(2)``); :func:`labels` gives the labels of a program as
equations show them and :func:`tex_label` writes one in LaTeX
(``Z_{\\mathrm{l0}}``).  With ``latex=True`` the names handed to
:func:`op_equation` / :func:`op_rhs` are LaTeX already (see
:func:`tex_names`).
"""
from __future__ import annotations

import re

from .ir import Op

__all__ = ["op_equation", "op_rhs", "labels", "tex_label", "tex_names", "tex_text",
           "tex_roman", "tex_key",
           "UNICODE_TEX"]

#: the Unicode operators of the text notation and their LaTeX
UNICODE_TEX = {
    "δ": r"\delta ", "ℓ": r"\ell ", "Σ": r"\Sigma ", "⊙": r"\odot ", "ᵀ": r"^{\top}",
    "·": r"\cdot ", "‖": r"\|", "∘": r"\circ ", "σ": r"\sigma ", "⊗": r"\otimes ",
    "×": r"\times ", "→": r"\to ", "Λ": r"\Lambda ", "∂": r"\partial ", "∇": r"\nabla ",
    "²": "^{2}", "θ": r"\theta ", "λ": r"\lambda ", "≤": r"\le ", "…": r"\ldots ",
}


def op_rhs(op: Op, names: dict, latex: bool = False) -> str:
    """The right-hand side of ``op`` in matrix notation."""
    if latex:
        missing = [a for a in (op.out,) + tuple(op.args) if a not in names]
        if missing:
            names = {**{a: _tex_ident(a) for a in missing}, **names}
    return op.primitive.equation(op, names, latex)


def op_equation(op: Op, names: dict | None = None, latex: bool = False) -> str:
    names = names or {}
    rhs = op_rhs(op, names, latex)
    out = names.get(op.out, _tex_ident(op.out) if latex else op.out)
    return f"{out} = {rhs}"


# ---- labels ---------------------------------------------------------------

_SUMMAND = re.compile(r"\}\[(\d+)\]$")


def labels(prog, graph_vars: dict | None = None) -> dict:
    """{variable: label} of a lowered program as equations show it.

    ``graph_vars`` (the derivation's ``graph.vars``) also names variables
    the program does not touch (forward statements in ``Grad of`` heads).
    Two labels are completed here: a summand of a tangent product rule
    (``R{XW_l1}[1]``) is ``R{XW_l1}^(1)``, like every other summand, and
    the terms that a ``sum`` reduces to a value of the same label are that
    label ``(unsummed)``; a variable without a label that is a constant
    zero is ``0``."""
    source = graph_vars if graph_vars is not None else prog.vars
    names = {n: _SUMMAND.sub(r"}^(\1)", v.label or n) for n, v in source.items()}
    for n, v in prog.vars.items():
        names.setdefault(n, _SUMMAND.sub(r"}^(\1)", v.label or n))
    for op in prog.ops:
        if op.primitive.elementwise and names[op.out] == op.out and op.attrs["expr"] == 0:
            names[op.out] = "0"
        if op.primitive.reduces and names[op.args[0]] == names[op.out]:
            names[op.args[0]] += "(unsummed)"
    return names


def tex_names(names: dict) -> dict:
    """The LaTeX of every label in ``names``."""
    return {k: tex_label(v) for k, v in names.items()}


_BASE = re.compile(r"(Σℓ|ℓ|[A-Za-z]+|[0-9]+)(?:_([A-Za-z0-9_]+))?")
_SUFFIXES = (
    (re.compile(r"\[(\d+)\]"), lambda m: f"[{m.group(1)}]", False),
    (re.compile(r"\^\((\d+)\)"), lambda m: f"^{{({m.group(1)})}}", True),
    (re.compile(r"\^∘(\d+)"), lambda m: f"^{{\\circ {m.group(1)}}}", True),
    (re.compile(r"\(t([+-])1\)"), lambda m: f"(t{m.group(1)}1)", False),
    (re.compile(r"\(t=(\d+)\)"), lambda m: f"(t{{=}}{m.group(1)})", False),
    (re.compile(r"\(from t([+-])1\)"), lambda m: f"(\\text{{from }} t{m.group(1)}1)", False),
    (re.compile(r"\(unsummed\)"), lambda m: r"(\text{unsummed})", False),
)
_FUNCS = {"cut": r"\operatorname{cut}", "f''": "f''", "f'": "f'", "ℓ''": r"\ell''"}


def _closing(s: str, i: int) -> int:
    """Index of the bracket closing the one at ``s[i]``."""
    pair = {"{": "}", "(": ")", "[": "]"}[s[i]]
    depth = 0
    for j in range(i, len(s)):
        depth += s[j] == s[i]
        depth -= s[j] == pair
        if depth == 0:
            return j
    raise ValueError(f"unbalanced {s[i]!r} in label {s!r}")


def tex_label(label: str) -> str:
    """A label in LaTeX: ``Z_l0`` -> ``Z_{\\mathrm{l0}}``, ``XW_l0`` ->
    ``\\mathit{XW}_{\\mathrm{l0}}``, ``δH_l0(t-1)`` -> ``\\delta
    H_{\\mathrm{l0}}(t-1)``, ``R{A_l0}`` -> ``\\mathcal{R}\\{A_{\\mathrm{l0}}\\}``,
    ``δXG_l0^(2)`` -> ``\\delta \\mathit{XG}_{\\mathrm{l0}}^{(2)}``.
    A label outside the notation is set as text (so nothing is lost)."""
    try:
        return _tex(label)
    except ValueError:
        return tex_text(label)


def _tex(s: str) -> str:
    if s.startswith("δ"):
        return r"\delta " + _tex(s[1:])
    if s.startswith("R{"):
        j = _closing(s, 1)
        return _suffixes(r"\mathcal{R}\{" + _tex(s[2:j]) + r"\}", s[j + 1:], s)
    if s.startswith("V_"):
        return "V_{" + _tex(s[2:]) + "}"
    if s.startswith("‖") and s.endswith("‖²"):
        return r"\|" + _tex(s[1:-2]) + r"\|^{2}"
    for fn, tex in _FUNCS.items():
        if s.startswith(fn + "("):
            j = _closing(s, len(fn))
            return _suffixes(f"{tex}({_tex(s[len(fn) + 1:j])})", s[j + 1:], s)
    if s.startswith("("):
        j = _closing(s, 0)
        inner = r" \odot ".join(_tex(p) for p in s[1:j].split("⊙"))
        return _suffixes(f"({inner})", s[j + 1:], s)
    m = _BASE.match(s)
    if not m:
        raise ValueError(s)
    base = m.group(1)
    tex = {"ℓ": r"\ell", "Σℓ": r"\Sigma\ell", "1": r"\mathbf{1}", "Xhat": r"\hat{X}"}.get(base)
    if tex is None:
        tex = base if len(base) == 1 or base.isdigit() else rf"\mathit{{{base}}}"
    if m.group(2):
        tex += r"_{\mathrm{" + m.group(2).replace("_", r"\_") + "}}"
    return _suffixes(tex, s[m.end():], s)


def _suffixes(tex: str, rest: str, label: str) -> str:
    sup = False
    while rest:
        for pattern, fmt, is_sup in _SUFFIXES:
            m = pattern.match(rest)
            if m:
                if is_sup and sup:       # a second superscript: group the first
                    tex = "{" + tex + "}"
                sup = is_sup
                tex += fmt(m)
                rest = rest[m.end():]
                break
        else:
            raise ValueError(label)
    return tex


def _tex_ident(name: str) -> str:
    """A code name (``l0_Z``) in LaTeX."""
    return r"\mathtt{" + name.replace("_", r"\_") + "}"


_TEXT_ESCAPES = {"\\": r"\backslash ", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                 "$": r"\$", "{": r"\{", "}": r"\}", "^": r"\hat{}", "~": r"\sim "}


def tex_text(text: str) -> str:
    """Plain text as LaTeX math: ``\\text{...}`` pieces, with the Unicode
    operators of the notation as LaTeX commands between them."""
    out, run = [], []

    def flush():
        if run:
            out.append(r"\text{" + "".join(run) + "}")
            run.clear()

    for ch in text:
        if ch in UNICODE_TEX:
            flush()
            out.append(UNICODE_TEX[ch])
        elif ch in _TEXT_ESCAPES:
            flush()
            out.append(_TEXT_ESCAPES[ch])
        else:
            run.append(ch)
    flush()
    return "".join(out)


def tex_roman(name: str) -> str:
    """A layer name as an upright LaTeX subscript: ``l0`` -> ``\\mathrm{l0}``."""
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def tex_key(key: str) -> str:
    """A parameter key (``l0.W``, or several joined) in LaTeX typewriter."""
    return r"\texttt{" + key.replace("_", r"\_") + "}"
