"""``bpgen doc``'s HTML: one self-contained page (MathML from latex2mathml:
no network, no JavaScript), and the strict LaTeX -> MathML conversion that
also checks every equation ``bpgen show --latex`` and ``bpgen doc`` print."""
from __future__ import annotations

import html
import re

__all__ = ["TexError", "tex_to_mathml", "to_html"]


class TexError(ValueError):
    """An equation that is not well-formed LaTeX math."""


# ---- strict LaTeX -> MathML -----------------------------------------------

def tex_to_mathml(tex: str, display: bool = False) -> str:
    """MathML for ``tex``, or :class:`TexError` when it is malformed.

    latex2mathml alone accepts unbalanced braces (``x_{a``) and unknown
    commands (printed as text), so this checks first: ASCII only (no raw
    Unicode operators), braces balanced token by token, ``\\begin``/``\\end``
    paired; then converts (latex2mathml raises on a ``\\left`` without
    ``\\right``, a double subscript, a missing argument); then refuses a
    result that still holds a backslash (a command it did not know)."""
    try:
        from latex2mathml.converter import convert
        from latex2mathml.tokenizer import tokenize
    except ImportError:       # pragma: no cover - a declared dependency
        raise TexError("LaTeX checks and HTML output need latex2mathml "
                       "(pip install latex2mathml)") from None
    if not tex.isascii():
        bad = sorted({ch for ch in tex if not ch.isascii()})
        raise TexError(f"raw Unicode {''.join(bad)!r} in LaTeX: {tex}")
    depth, envs = 0, []
    for tok in tokenize(tex):
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth < 0:
                raise TexError(f"unbalanced '}}' in: {tex}")
        elif tok.startswith(r"\begin{"):
            envs.append(tok[7:])
        elif tok.startswith(r"\end{"):
            if not envs or envs.pop() != tok[5:]:
                raise TexError(f"unmatched {tok} in: {tex}")
    if depth:
        raise TexError(f"{depth} unclosed '{{' in: {tex}")
    if envs:
        raise TexError(rf"\begin{{{envs[-1]}}} without \end in: {tex}")
    try:
        out = convert(tex, display="block" if display else "inline")
    except Exception as exc:   # latex2mathml's own errors carry no message
        raise TexError(f"{type(exc).__name__} in: {tex}") from None
    # text-mode escapes (\texttt{l0\_x}) are copied verbatim by latex2mathml
    out = _MTEXT.sub(lambda m: m.group(1) + re.sub(r"\\([_%&#${}])", r"\1", m.group(2)), out)
    if "\\" in out:
        cmd = re.search(r"\\[A-Za-z]+", out)
        raise TexError(f"unknown command {cmd.group(0) if cmd else '?'} in: {tex}")
    # a multi-letter name (\mathit{XW}) is one identifier, not a product X W
    out = _ITALIC_RUN.sub(lambda m: '<mi mathvariant="italic">'
                          + "".join(_ITALIC_LETTER.findall(m.group(0))) + "</mi>", out)
    out = _fix_operators(out)
    # an HTML page needs no namespace on <math> (and then holds no URL at all)
    return out.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "")


def _fix_operators(out: str) -> str:
    r"""Two of latex2mathml's renderings that read badly in a browser:

    * ``\mathrel{+}=`` (an accumulation, "+=") becomes an operator in an
      operator followed by "=", which browsers space as "+ ="; here it is
      one operator "+=";
    * a prime as a superscript (``f'``, ``f''_k``) is shrunk twice (the
      glyph is already a raised, small one), so it is put on the base line
      next to its letter in the page's serif text font (class "prime"),
      whose prime is a raised glyph of full size: f″ with subscript k.
    """
    out = _REL_EQ.sub(lambda m: f"<mo>{m.group(1)}&#x0003D;</mo>", out)
    out = _PRIME_SUB.sub(lambda m: f"<msub><mrow>{m.group(1)}{_prime(m.group(3))}</mrow>"
                                   f"{m.group(2)}</msub>", out)
    out = _PRIME_SUP.sub(lambda m: f"<mrow>{m.group(1)}{_prime(m.group(2))}</mrow>", out)
    return out


def _prime(entity: str) -> str:
    return f'<mo class="prime" lspace="0em" rspace="0em">{entity}</mo>'


_PRIMES = r"&#x02032;|&#x02033;|&#x02034;"
_SIMPLE = r"<m[in](?: [^>]*)?>[^<]*</m[in]>"
_REL_EQ = re.compile(r"<mo><mrow><mo>([^<]+)</mo></mrow></mo><mo>&#x0003D;</mo>")
_PRIME_SUB = re.compile(rf"<msubsup>({_SIMPLE})({_SIMPLE}|<mrow>(?:{_SIMPLE})+</mrow>)"
                        rf"<mi>({_PRIMES})</mi></msubsup>")
_PRIME_SUP = re.compile(rf"<msup>({_SIMPLE})<mi>({_PRIMES})</mi></msup>")

_MTEXT = re.compile(r"(<mtext[^>]*>)([^<]*)")
_ITALIC_LETTER = re.compile(r'<mi mathvariant="italic">([A-Za-z])</mi>')
_ITALIC_RUN = re.compile(r'<mrow>(?:<mi mathvariant="italic">[A-Za-z]</mi>){2,}</mrow>')


# ---- HTML ---------------------------------------------------------------

_CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 62em; margin: 2em auto;
       padding: 0 1.5em; line-height: 1.45; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.9em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.45em; border-bottom: 1px solid #bbb; margin-top: 2em; }
h3 { font-size: 1.15em; margin-top: 1.6em; color: #333; }
code { font-family: 'DejaVu Sans Mono', monospace; font-size: .88em; background: #f2f2f2;
       padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: 1em 0; font-size: .95em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
math { font-family: 'Latin Modern Math', 'STIX Two Math', 'DejaVu Math TeX Gyre',
              'Cambria Math', math; font-size: 1.1em; }
.eq { margin: .45em 0 .45em 1.5em; overflow-x: auto; overflow-y: hidden; padding: .15em 0; }
.eq math { display: inline math; math-style: normal; }
mi[mathvariant="italic"] { font-style: italic; }
mtext[mathvariant="monospace"] { font-family: 'DejaVu Sans Mono', monospace; font-size: .85em; }
msub > :nth-child(2) mi[mathvariant="normal"], msub > :nth-child(2) mn,
msubsup > :nth-child(2) mi[mathvariant="normal"], msubsup > :nth-child(2) mn {
  font-family: 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif; font-size: .9em; }
.gradof { margin: 1.4em 0 .3em 0; padding: .3em .6em; background: #f3f6fb;
          border-left: 4px solid #5577aa; }
.gradof code { background: none; color: #555; }
[mathvariant="bold"] { font-weight: bold; }
mo.prime { font-family: Georgia, 'DejaVu Serif', serif; }
"""


def _inline_html(text: str) -> str:
    """Prose with ``$math$``, ``\\`code\\```, ``**bold**`` and ``*italics*``."""
    out, pos = [], 0
    for m in re.finditer(r"(?<!\\)\$([^$]+?)(?<!\\)\$|`([^`]+)`", text):
        out.append(_emphasis(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(tex_to_mathml(m.group(1)))
        else:
            out.append("<code>" + html.escape(m.group(2)) + "</code>")
        pos = m.end()
    out.append(_emphasis(text[pos:]))
    return "".join(out)


def _emphasis(text: str) -> str:
    text = re.sub(r"\\([\\`*_$\[\]<>])", lambda m: f"\x00{ord(m.group(1))}\x00", text)
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: html.escape(chr(int(m.group(1)))), text)


def to_html(blocks: list, title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            body.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "math":
            body.append('<div class="eq">' + tex_to_mathml(b[1], display=True) + "</div>")
        elif kind == "grad_of":
            body.append(f'<p class="gradof"><strong>Grad of</strong> {tex_to_mathml(b[1])} '
                        f"<code>(code: {html.escape(b[2])})</code></p>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row)
                           + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
