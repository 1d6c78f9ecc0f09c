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
The HTML page and the strict LaTeX -> MathML check are in
:mod:`bpgen.doc_html`; the Hessian section's sentences in
:mod:`bpgen.hessian_text`.
"""
from __future__ import annotations

import math
import os
import re
import tempfile

import sympy as sp

from . import __version__
from .derivation import derive_all, program
from .doc_html import TexError, tex_to_mathml, to_html
from .equations import labels, op_equation, tex_label, tex_names
from .layers import LAYER_TYPES
from .losses import LOSSES
from .network import derive
from .shapes import dim_coeffs, symbolic
from .hessian_text import hessian_items
from .show import _shape, _tex_range, shape_text, walk
from .spec import Spec, load_spec

__all__ = ["document", "markdown", "to_html", "write", "tex_to_mathml", "TexError",
           "matmul_flops", "SECTIONS"]

#: the section headings, in order
SECTIONS = ("Notation", "1. Architecture and shapes", "2. Forward pass",
            "3. Backward pass", "4. Loops over time (BPTT)",
            "5. Parameter gradients as low-rank products", "6. The Hessian",
            "7. Cost")


# ---- the document as blocks -------------------------------------------------
# ("h", level, text), ("p", text with $math$ and `code`), ("math", tex),
# ("table", header, rows), ("grad_of", tex, code name)

def _num(c) -> str:
    """A count as LaTeX: ``12{,}288``, or a polynomial in T (steps: any)."""
    if symbolic(c):
        c = sp.expand(c)
        return rf"\left({sp.latex(c)}\right)" if isinstance(c, sp.Add) else sp.latex(c)
    return f"{c:,}".replace(",", r"\,")


def _dim_tex(d) -> str:
    a, b = dim_coeffs(d)
    if not a:
        return _num(b) if symbolic(b) else str(b)
    return "N" if a == 1 else f"{_num(a) if symbolic(a) else a}N"


def _shape_tex(shape) -> str:
    return r" \times ".join(_dim_tex(d) for d in shape)


def _poly(coeffs: dict) -> str:
    """{power of N: coefficient} as ``12{,}288\\,N + 640`` (LaTeX)."""
    terms = []
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if not c:
            continue
        num = _num(c)
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
    what = inp.doc_text()               # the input kind's words
    rows = []
    g = d.graph
    for layer in spec.layers:
        ps = ", ".join(f"`{layer.name}.{p.name}` "
                       f"${tex_label(g.vars[d.params[layer.name + '.' + p.name]].label)}$ "
                       f"{tuple(p.shape)}" for p in layer.params)
        rows.append((f"`{layer.name}`", layer.type, LAYER_TYPES[layer.type].describe(layer),
                     f"{tuple(layer.in_shape)} to {tuple(layer.out_shape)}", ps or "none"))
    text = f"The loss is the {LOSSES[spec.loss.type].doc}, averaged over the samples"
    if inp.is_sequence and len(spec.output_shape) == 2:
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
            back = info["backward"]
            out.append(("h", 3, f"Loop over time steps: {_md_text(info['label'] or 'loop')}, "
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
            if symbolic(steps):          # steps: any
                word = "T - 1 - t" if rev else "t"
                rows.append((_md_text(info["label"] or "loop"), f"${_tex_range(info)}$", "T",
                             carried, f"every {k} steps: no gradient flows across the steps "
                                      f"where ${word}$ is a positive multiple of {k}"))
                continue
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
        rows.append((_md_text(info["label"] or "loop"), f"${_tex_range(info)}$",
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
           ("p", r"Every weight (and table) gradient is one matrix product $\delta W = U^{\top} \cdot V$ "
                 r"of two matrices with one row per sample (per sample and step over a "
                 r"sequence, per sample and pixel for a convolution), so its rank is at most "
                 r"their number of rows. `grad_factors` returns these $(U, V)$ without forming "
                 r"$\delta W$. With l2 the gradient adds $\lambda W$ to the product.")]
    prog = derived.programs["grad_factors"]
    spec = derived.spec
    rows = []
    for key, (iu, iv, *table) in derived.meta.factor_index.items():
        v = prog.outputs[iv]
        sv, lv = prog.vars[v].shape, tex_label(prog.vars[v].label)
        if table:       # an embedding table: U = onehot(index), one row per row of V
            su = (sv[0], table[0])
            lu = (r"\operatorname{onehot}(X)" if iu == -1 else r"\operatorname{onehot}(t)"
                  if iu == -2 else rf"\operatorname{{onehot}}({tex_label(prog.vars[prog.outputs[iu]].label)})")
        else:
            u = prog.outputs[iu]
            su, lu = prog.vars[u].shape, tex_label(prog.vars[u].label)
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
        if item.kind == "eq":
            out.append(("math", item.tex() + (r" \qquad " + item.shape.replace("×", r"\times")
                                              if item.shape else "")))
        else:
            out.append(("p", item.tex() + ("." if item.kind == "title" else "")))
    return out


#: generated programs that are not functions of the module -> who runs them
INTERNAL_PROGRAMS = {
    "curvature": "the layer curvature factors `hessian_diag` reads",
    "grad_terms": "the loss and every gradient's summands before the reduction over rows, "
                  "for `per_sample_grads`, `per_sample_grad_norms` and `clipped_grad`",
    "hessian_columns": "Hessian columns, in chunks of directions, for `hmp` (and `hessian`, "
                       "`hessian_diag`, `hessian_blocks` where they are not assembled)",
}


def _cost(derived) -> list:
    size = 4 if derived.spec.dtype == "float32" else 8
    rows = []
    for name, prog in derived.programs.items():
        a, b = prog.workspace_size
        ws = _poly({1: a, 0: b})
        what = (f"`{name}` (internal program: {INTERNAL_PROGRAMS[name]})"
                if name in INTERNAL_PROGRAMS else f"`{name}`")
        rows.append((what, ", ".join(derived.entries[name].inputs),
                     f"${_poly(matmul_flops(prog))}$", f"${ws}$",
                     f"${_poly({1: a * size, 0: b * size})}$"))
    return [("h", 2, SECTIONS[7]),
            ("p", "Per call with a batch of $N$ samples: the floating-point operations of the "
                  r"matrix products ($2 m n k$ for an $(m \times k)$ by $(k \times n)$ product, "
                  "times the steps for a product inside a loop; elementwise work is not "
                  "counted) and the workspace each entry point allocates for its temporaries "
                  f"(elements, and bytes for {derived.spec.dtype}). Rows marked internal are "
                  "generated programs the module's functions run, not functions of the "
                  "module."),
            ("table", ("entry point or program", "inputs", "matrix-product FLOPs", "workspace elements",
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


#: file name endings -> the document's format
FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def output_format(path, what: str = "path") -> str:
    """The format for writing to ``path`` ("markdown" or "html"), chosen by
    its ending; a ``ValueError`` naming ``what`` for any other ending, a
    directory, or a file in a directory that does not exist (checked before
    the document is derived)."""
    path = os.fspath(path)
    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if os.path.isdir(path):
        raise ValueError(f"{what}: {path} is a directory; give a file name ending in "
                         f".md or .html")
    if fmt is None:
        raise ValueError(f"{what}: {path}: expected a name ending in .md (Markdown) or "
                         f".html (HTML with MathML)")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ValueError(f"{what}: {path}: the directory {parent} does not exist")
    return fmt


def write(arch, path=None, *, what: str = "path") -> str:
    """The document of ``arch``: Markdown, or HTML when ``path`` ends in
    ``.html``/``.htm``; written to ``path`` (ending in .md, .markdown, .html
    or .htm, else a ``ValueError``) when given.  Returns the text."""
    fmt = "markdown" if path is None else output_format(path, what)
    blocks = document(arch)
    text = to_html(blocks, blocks[0][2]) if fmt == "html" else markdown(blocks)
    if path is not None:
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                                   prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return text
