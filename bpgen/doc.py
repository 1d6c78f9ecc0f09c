"""``bpgen doc``: the derivation of one network as a document a student can
follow, in Markdown (``$$ ... $$`` math) or as one self-contained HTML page
(MathML from latex2mathml: no network, no JavaScript).

Everything comes from the derivation the generated module is emitted from:
the forward and backward pass are the program ``loss_and_grad``
(:func:`bpgen.derivation.program`) walked in the blocks of the generated code
(:func:`bpgen.show.walk`, i.e. ``Emitter.blocks``), so every ``Grad of`` block
here is a ``# Grad of:`` comment there, in the same order and naming the same
code variable.  The Hessian section is ``bpgen show --hessian``'s content;
the cost table reads every entry point's lowered program.  The notation is
``docs/notation.md``.

(Over ~500 lines: one document, section by section, each a short function;
splitting it would scatter one reader-facing text over several files.)
"""
from __future__ import annotations

import html
import math
import os
import re

from . import __version__
from .derivation import derive_all, program
from .equations import labels, op_equation, tex_label, tex_names
from .layers import LAYER_TYPES
from .network import derive
from .shapes import dim_coeffs
from .show import _shape, _tex_range, hessian_items, shape_text, walk
from .spec import Spec, load_spec

__all__ = ["document", "markdown", "to_html", "write", "tex_to_mathml", "TexError",
           "matmul_flops", "SECTIONS"]

#: the section headings, in order
SECTIONS = ("Notation", "1. Architecture and shapes", "2. Forward pass",
            "3. Backward pass", "4. Loops over time (BPTT)",
            "5. Parameter gradients as low-rank products", "6. The Hessian",
            "7. Cost")


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
    # an HTML page needs no namespace on <math> (and then holds no URL at all)
    return out.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "")


_MTEXT = re.compile(r"(<mtext[^>]*>)([^<]*)")
_ITALIC_LETTER = re.compile(r'<mi mathvariant="italic">([A-Za-z])</mi>')
_ITALIC_RUN = re.compile(r'<mrow>(?:<mi mathvariant="italic">[A-Za-z]</mi>){2,}</mrow>')


# ---- the document as blocks -------------------------------------------------
# ("h", level, text), ("p", text with $math$ and `code`), ("math", tex),
# ("table", header, rows), ("grad_of", tex, code name)

def _dim_tex(d) -> str:
    a, b = dim_coeffs(d)
    if not a:
        return str(b)
    return "N" if a == 1 else f"{a}N"


def _shape_tex(shape) -> str:
    return r" \times ".join(_dim_tex(d) for d in shape)


def _poly(coeffs: dict) -> str:
    """{power of N: coefficient} as ``12{,}288\\,N + 640`` (LaTeX)."""
    terms = []
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if not c:
            continue
        num = f"{c:,}".replace(",", r"\,")
        if p == 0:
            terms.append(num)
        else:
            n = "N" if p == 1 else f"N^{{{p}}}"
            terms.append(n if c == 1 else rf"{num}\,{n}")
    return " + ".join(terms) or "0"


def matmul_flops(prog) -> dict:
    """FLOPs of the matrix products of ``prog``, {power of N: coefficient}:
    2·m·n·k per product of an (m, k) by a (k, n) matrix (dims as seen where
    the op runs: one step inside a loop), times the loop's steps."""
    total: dict = {}
    for op in prog.ops:
        if not op.primitive.product:
            continue
        a, b = op.args

        def seen(name, loop=op.loop):
            shape = prog.vars[name].shape
            if loop is not None and shape[0] == prog.loops[loop]["seq"]:
                return ("N", shape[1])
            return shape
        sa, sb = seen(a), seen(b)
        m, k = (sa[1], sa[0]) if op.attrs["ta"] else sa
        n = sb[0] if op.attrs["tb"] else sb[1]
        coeff, power = 2, 0
        for d in (m, n, k):
            da, db = dim_coeffs(d)
            if da:
                coeff, power = coeff * da, power + 1
            else:
                coeff *= db
        if op.loop is not None:
            coeff *= prog.loops[op.loop]["steps"]
        total[power] = total.get(power, 0) + coeff
    return total


def _notation() -> list:
    rows = [
        (r"$X$, $Y$, $L$", "input, target (one-hot for labels), loss (mean over samples)"),
        (r"$W_{\mathrm{l0}}$, $b_{\mathrm{l0}}$",
         "weight and bias of layer l0 (the subscript is the layer's name)"),
        (r"$Z_{\mathrm{l0}}$, $A_{\mathrm{l0}}$", r"pre-activation and activation $A = f(Z)$"),
        (r"$H_{\mathrm{l0}}$, $C_{\mathrm{l0}}$", "hidden and cell state of a recurrent layer"),
        (r"$\delta V$", r"the gradient $\partial L / \partial V$, shaped like $V$"),
        (r"$\mathcal{R}\{V\}$",
         r"the R-operator: the change of $V$ along the direction $v$ of the parameters "
         r"($\mathcal{R}\{\delta W\}$ is $\nabla^{2} L \cdot v$)"),
        (r"$A \cdot B$, $A \odot B$, $A^{\top}$, $A^{\circ 2}$",
         "matrix product, elementwise product, transpose, elementwise square"),
        (r"$\mathbf{1}^{\top} \cdot A$, $A \cdot \mathbf{1}$",
         "column sums (over the rows, e.g. the samples), row sums"),
        (r"$G_{\mathrm{l0}}[k]$",
         "column block $k$ of a matrix (gate $k$ of a recurrent layer, counted from 0)"),
        (r"$\delta V^{(k)}$", r"the $k$-th summand of an accumulated gradient: "
                              r"$\delta V = \delta V^{(1)} + \delta V^{(2)} + \ldots$"),
        (r"$V(t-1)$, $V(t{=}19)$", "a time step of a sequence: the previous step, step 19"),
        (r"$\delta V(\text{from } t+1)$",
         r"the part of $\delta V$ carried back from the next step (BPTT)"),
        (r"$\Lambda_{\mathrm{l0}}$",
         "the curvature of the loss with respect to a layer's pre-activation (section 6)"),
    ]
    return [("h", 2, SECTIONS[0]),
            ("p", "The notation of bpgen (docs/notation.md in the bpgen sources gives every "
                  "symbol, its meaning and its shape). Every matrix has one row per sample "
                  "($N$ rows for a batch of $N$), or one row per sample and time step for a "
                  "sequence ($T N$ rows, time-major)."),
            ("table", ("symbol", "meaning"), rows)]


def _architecture(spec, d) -> list:
    inp = spec.input
    if inp.kind == "sequence":
        t, f = inp.shape
        what = (f"a sequence of $T = {t}$ steps of {f} features, stored time-major as a "
                f"$({t}N \\times {f})$ matrix $X$: rows $tN$ to $tN + N - 1$ are step $t$")
    elif inp.kind == "image":
        c, h, w = inp.shape
        what = (f"images of {c} channel(s), {h} by {w} pixels, one row of {c * h * w} values "
                f"per sample: $X$ is $(N \\times {c * h * w})$")
    else:
        what = f"{inp.shape[0]} features per sample: $X$ is $(N \\times {inp.shape[0]})$"
    rows = []
    g = d.graph
    for layer in spec.layers:
        ps = ", ".join(f"`{layer.name}.{p.name}` "
                       f"${tex_label(g.vars[d.params[layer.name + '.' + p.name]].label)}$ "
                       f"{tuple(p.shape)}" for p in layer.params)
        rows.append((f"`{layer.name}`", layer.type, LAYER_TYPES[layer.type].describe(layer),
                     f"{tuple(layer.in_shape)} to {tuple(layer.out_shape)}", ps or "none"))
    loss = {"softmax_cross_entropy": "softmax cross-entropy against integer labels "
                                     "(one-hot $Y$)",
            "mse": r"mean squared error $\frac{1}{2} (O - Y)^{\circ 2}$ per unit",
            "sigmoid_binary_cross_entropy": "sigmoid binary cross-entropy per unit"}
    text = f"The loss is the {loss[spec.loss.type]}, averaged over the samples"
    if inp.kind == "sequence" and len(spec.output_shape) == 2:
        text += (" at the last step only" if spec.loss.steps == "last"
                 else " and the steps")
    if spec.l2:
        text += rf", plus $\frac{{\lambda}}{{2}} \sum \|W\|^{{2}}$ with $\lambda = {spec.l2:g}$ "
        text += "over the weight matrices"
    text += "."
    if spec.truncate:
        text += (f" The gradient is truncated BPTT: it flows back at most {spec.truncate} "
                 "steps through the recurrent state (section 4).")
    n_params = sum(math.prod(s) for s in spec.param_shapes.values())
    return [("h", 2, SECTIONS[1]),
            ("p", f"Input: {what}. The network has {len(spec.layers)} layer(s) and "
                  f"{n_params:,} parameters; shapes per sample:"),
            ("table", ("layer", "type", "details", "per-sample shape", "parameters"), rows),
            ("p", text)]


def _op_math(prog, op, tn) -> str:
    return op_equation(op, tn, latex=True) + r" \qquad " + shape_text(_shape(prog, op), True)


def _passes(spec, prog, names, tn, items) -> tuple:
    """The forward and the backward pass as blocks (sections 2 and 3)."""
    fwd = [("h", 2, SECTIONS[1 + 1]),
           ("p", "Each statement is one line of the generated function `loss_and_grad`, "
                 "with the shape of its result; a comment of the generated code is in "
                 "italics.")]
    bwd = [("h", 2, SECTIONS[3]),
           ("p", r"Reverse mode walks the forward pass backwards. $\delta V = \partial L / "
                 r"\partial V$ has the shape of $V$; where $V$ feeds several statements, its "
                 r"gradient is the sum of their contributions $\delta V^{(1)}, \delta "
                 r"V^{(2)}, \ldots$. Each block starts from the forward statement it "
                 "differentiates (**Grad of**), in the order of the generated code; the code "
                 "variable named after it is the one its `# Grad of:` comment names.")]
    out, in_loop, after_loop = fwd, None, False
    for item in items:
        kind = item[0]
        if kind == "head":
            _, key, first, backward = item
            if backward and out is fwd:
                out = bwd
            if key is None and backward and not in_loop:
                out.append(("p", "**Total gradients**: the sums of all contributions."))
            continue
        if after_loop and kind in ("grad_of", "op", "comment"):
            out.append(("p", "After the loop, on whole sequences (all steps at once):"))
            after_loop = False
        if kind == "comment":
            out.append(("p", "*" + _md_text(item[1]) + "*"))
        elif kind == "grad_of":
            op = item[1]
            out.append(("grad_of", op_equation(op, tn, latex=True), op.out))
        elif kind == "loop":
            info = item[1]
            in_loop = info
            back = info["title"].startswith("backward")
            title = info["title"].rsplit(", t = ", 1)[0]
            out.append(("h", 3, f"Loop over time steps: {_md_text(title)}, "
                                f"${_tex_range(info)}$"))
            out.append(("p", "Inside the loop a sequence is its step $t$ ($N$ rows); the "
                             + ("gradient of the state flows back from each step to the one "
                                "before it." if back else
                                "state of the previous step is read, zero at the first step.")))
        elif kind == "end":
            in_loop, after_loop = None, True
        elif kind == "op":
            out.append(("math", _op_math(prog, item[1], tn)))
    return fwd, bwd


def _md_text(text: str) -> str:
    """Prose from the generated code's comments for Markdown: symbols
    that would start emphasis or math are escaped."""
    return re.sub(r"([\\`*_$\[\]<>])", r"\\\1", text)


def _loops(spec, prog, names) -> list:
    out = [("h", 2, SECTIONS[4])]
    if not prog.loops:
        out.append(("p", "This network has no recurrent layer: there is no loop over time."))
        return out
    out.append(("p", "A recurrent layer is a loop over the time steps around one step of "
                     "the cell; its input projection and every parameter gradient are single "
                     "matrix products over whole sequences outside the loop. Reverse mode "
                     "turns each loop into a loop in the other direction that carries the "
                     "gradient of the recurrent state from one step to the one before it "
                     "(backpropagation through time):"))
    rows = []
    for lid, info in prog.loops.items():
        ops = [op for op in prog.ops if op.loop == lid]
        states = [op for op in ops if op.primitive.state_read]
        carried = ", ".join(f"${tex_label(names[op.out])}$" for op in states) or "none"
        cuts = [op for op in ops if op.primitive.truncates]
        cut = "no"
        if cuts:
            k, steps = cuts[0].attrs["every"], info["steps"]
            rev = cuts[0].attrs["forward_reverse"]
            at = [s for s in range(steps) if s % k == 0 and s > 0]
            at_t = [steps - 1 - s if rev else s for s in at]
            windows = []
            for s in range(0, steps, k):
                a, b = s, min(s + k, steps) - 1
                ta, tb = (steps - 1 - a, steps - 1 - b) if rev else (a, b)
                windows.append(f"{ta}..{tb}" if ta != tb else f"{ta}")
            cut = (f"every {k} steps: no gradient flows from step $t$ back to step "
                   f"$t {'+' if rev else '-'} 1$ for $t \\in \\{{{', '.join(map(str, at_t))}\\}}$ "
                   f"(where the forward loop has run a multiple of {k} steps), so it stays "
                   f"inside the windows {', '.join(windows)}" if at
                   else f"every {k} steps (no cut within {steps} steps)")
        rows.append((_md_text(info["title"].rsplit(", t = ", 1)[0]), f"${_tex_range(info)}$",
                     str(info["steps"]), carried, cut))
    out.append(("table", ("loop", "order", "steps", "carried from step to step",
                          "truncation"), rows))
    if spec.truncate:
        out.append(("p", "Truncation cuts only the gradient that flows through the recurrent "
                         "state; the contributions of every step to the parameter gradients "
                         "are all kept. `bpgen check` compares this truncated gradient with "
                         "the reference, and the exact one (no truncation) with finite "
                         "differences."))
    return out


def _factors(derived) -> list:
    out = [("h", 2, SECTIONS[5]),
           ("p", r"Every weight gradient is one matrix product $\delta W = U^{\top} \cdot V$ "
                 r"of two matrices with one row per sample (per sample and step over a "
                 r"sequence, per sample and pixel for a convolution), so its rank is at most "
                 r"their number of rows. `grad_factors` returns these $(U, V)$ without forming "
                 r"$\delta W$. With l2 the gradient adds $\lambda W$ to the product.")]
    prog = derived.programs["grad_factors"]
    spec = derived.spec
    rows = []
    for key, (iu, iv) in derived.meta.get("factor_index", {}).items():
        u, v = prog.outputs[iu], prog.outputs[iv]
        su, sv = prog.vars[u].shape, prog.vars[v].shape
        lu, lv = tex_label(prog.vars[u].label), tex_label(prog.vars[v].label)
        w = tex_label(derived.base.graph.vars[derived.base.params[key]].label)
        shape = spec.param_shapes[key]
        rows.append((f"`{key}`", rf"$\delta {w} = {{{lu}}}^{{\top}} \cdot {lv}$",
                     f"${_shape_tex(su)}$", f"${_shape_tex(sv)}$",
                     rf"$\min({_dim_tex(su[0])}, {su[1]}, {sv[1]})$",
                     f"{tuple(shape)}"))
    if rows:
        out.append(("table", ("parameter", r"$\delta W = U^{\top} \cdot V$", "U", "V",
                              "rank at most", "shape of W"), rows))
    else:
        out.append(("p", "This network has no weight matrix."))
    return out


def _hessian(spec) -> list:
    out = [("h", 2, SECTIONS[6])]
    for item in hessian_items(spec):
        if item[0] == "title":
            out.append(("p", item[2] + "."))
        elif item[0] == "text":
            out.append(("p", item[2]))
        else:
            _, _, tex, shape = item
            out.append(("math", tex + (r" \qquad " + shape.replace("×", r"\times")
                                       if shape else "")))
    return out


def _cost(derived) -> list:
    size = 4 if derived.spec.dtype == "float32" else 8
    rows = []
    for name, prog in derived.programs.items():
        a, b = prog.workspace_size
        ws = _poly({1: a, 0: b})
        rows.append((f"`{name}`", ", ".join(derived.entries[name].inputs),
                     f"${_poly(matmul_flops(prog))}$", f"${ws}$",
                     f"${_poly({1: a * size, 0: b * size})}$"))
    return [("h", 2, SECTIONS[7]),
            ("p", "Per call with a batch of $N$ samples: the floating-point operations of the "
                  r"matrix products ($2 m n k$ for an $(m \times k)$ by $(k \times n)$ product, "
                  "times the steps for a product inside a loop; elementwise work is not "
                  "counted) and the workspace each entry point allocates for its temporaries "
                  f"(elements, and bytes for {derived.spec.dtype})."),
            ("table", ("entry point", "inputs", "matrix-product FLOPs", "workspace elements",
                       "workspace bytes"), rows)]


def document(arch) -> list:
    """The document of ``arch`` (a path or dict) as a list of blocks."""
    spec = arch if isinstance(arch, Spec) else load_spec(arch)
    d = derive(spec)
    prog = program(spec, "loss_and_grad", d)
    names = labels(prog, d.graph.vars)
    tn = tex_names(names)
    items = walk(prog)
    derived = derive_all(spec)
    source = os.path.basename(spec.source)
    head = [("h", 1, f"Derivation of {spec.name}"),
            ("p", f"Written by `bpgen doc {source}` (bpgen {__version__}). This is the "
                  f"derivation that the generated modules `{spec.name}_numpy.py` and "
                  f"`{spec.name}_c.c` were emitted from (`bpgen build {source}`): the same "
                  "statements, in the same order, under the same names.")]
    fwd, bwd = _passes(spec, prog, names, tn, items)
    grads = [("p", "The gradient of each parameter:")]
    for key, var in d.grads.items():
        w = tex_label(d.graph.vars[d.params[key]].label)
        grads.append(("math", rf"\frac{{\partial L}}{{\partial {w}}} = {tn.get(var, var)}"
                              rf" \qquad (\texttt{{{key.replace('_', chr(92) + '_')}}})"))
    return (head + _notation() + _architecture(spec, d) + fwd + bwd + grads
            + _loops(spec, prog, names) + _factors(derived) + _hessian(spec) + _cost(derived))


# ---- Markdown ---------------------------------------------------------------

def markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(b[1])
        elif kind == "math":
            out.append("$$\n" + b[1] + "\n$$")
        elif kind == "grad_of":
            out.append(f"**Grad of** ${b[1]}$ (code: `{b[2]}`)")
        elif kind == "table":
            header, rows = b[1], b[2]
            lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(re.sub(r"(?<!\\)\|", r"\\|", c) for c in row) + " |"
                      for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


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


def write(arch, path: str | None = None) -> str:
    """The document of ``arch``: Markdown, or HTML when ``path`` ends in
    ``.html``/``.htm``; written to ``path`` when given.  Returns the text."""
    blocks = document(arch)
    if path is not None and path.lower().endswith((".html", ".htm")):
        text = to_html(blocks, blocks[0][2])
    else:
        text = markdown(blocks)
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text
