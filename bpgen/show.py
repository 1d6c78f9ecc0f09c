"""``bpgen show``: the derived equations in matrix form (text or LaTeX); the
block structure of the exact Hessian (``--hessian``) is
:mod:`bpgen.hessian_text`, which uses the helpers here.

The notation is the one of ``docs/notation.md``; the backward pass is
grouped in blocks exactly as the generated code is (``Grad of`` heads from
:meth:`bpgen.backends.common.emitter.Emitter.blocks`).  :func:`walk` and
:func:`shape_text` are shared with ``bpgen doc``.
"""
from __future__ import annotations

from .backends.common.emitter import Emitter
from .derivation import per_sample_plan, program
from .equations import labels, op_equation, tex_label, tex_names
from .ir import Op
from .layers import LAYER_TYPES
from .network import derive
from .spec import Spec, load_spec

__all__ = ["render", "walk", "shape_text", "tex_escape", "LEGEND"]

LEGEND = ("Notation (docs/notation.md): · matrix product, ⊙ elementwise product, / elementwise "
          "division,\n^∘2 elementwise square, ᵀ transpose, 1 a column of ones (1ᵀ·A sums the "
          "rows of A), δV = ∂L/∂V,\nV[k] column block k (a gate), V^(k) the k-th summand of an "
          "accumulated δV, V(t-1) a step of a sequence.\nShapes are (rows, cols): N the batch "
          "size, 5N the rows of a 5-step sequence.")


def _spec(arch) -> Spec:
    return arch if isinstance(arch, Spec) else load_spec(arch)


# ---- the blocks of a program, as the emitters group them ------------------

class _Walker(Emitter):
    """An emitter that prints nothing: its ``blocks()`` hold the ops and the
    heads themselves, so the grouping is the generated code's."""

    def __init__(self, prog):
        super().__init__(prog, "float64")

    def comment(self, text):
        return text if isinstance(text, tuple) else ("comment", text)

    def statement(self, op, prim, loop):
        return [("op", op, loop)]

    def loop(self, info, outs, lines):
        return [("loop", info)] + [x for x in lines if x != ""] + [("end", info)]

    def head(self, key, first, backward=True):
        return [("head", key, first, backward)]

    def head_op(self, key) -> Op:
        """The forward statement a ``Grad of`` block differentiates, as the
        generated code writes it (maps it does not store are inlined)."""
        lowered = next((o for o in self.prog.ops if o.out == key), None)
        op = lowered if lowered is not None else self.prog.forward_ops[key]
        if op.primitive.elementwise:
            expr = self._inline(op.attrs["expr"])
            args = tuple(sorted(s.name for s in expr.free_symbols
                                if s.name in self.prog.forward_ops or s.name in self.defined))
            op = Op("map", op.out, args, {"expr": expr})
        return op


def walk(prog) -> list:
    """The program as a flat list, in the generated code's order and blocks:
    ``("head", key, first, backward)`` (key None: the forward pass or the
    total gradients, else the forward variable of a ``Grad of`` block),
    ``("comment", text)``, ``("op", op, loop)``, ``("loop", info)`` /
    ``("end", info)`` around a loop's items, and ``("grad_of", op)`` right
    after a ``Grad of`` head: the forward statement it differentiates."""
    w = _Walker(prog)
    items = []
    for block in w.blocks():
        for x in block["head"] + block["lines"]:
            if isinstance(x, str):
                continue            # "loop over time steps": the ("loop", ...) item says it
            items.append(x)
            if x[0] == "head" and x[1] is not None:
                items.append(("grad_of", w.head_op(x[1])))
    return items


def shape_text(shape, latex: bool = False) -> str:
    """``(5N, 9)``; LaTeX ``5N \\times 9``."""
    dims = [str(d).replace("*", "") for d in shape]
    return r" \times ".join(dims) if latex else "(" + ", ".join(dims) + ")"


def _shape(prog, op):
    shape = prog.vars[op.out].shape
    if op.loop is not None and shape[0] == prog.loops[op.loop]["seq"]:
        shape = ("N", shape[1])
    return shape


def tex_escape(text: str) -> str:
    """Plain ASCII text for LaTeX's text mode."""
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


# ---- bpgen show -------------------------------------------------------------

def render(arch, latex: bool = False) -> str:
    """The derivation of ``arch`` (a path or dict) as printable text, or as
    a LaTeX fragment (``\\usepackage{amsmath}``)."""
    spec = _spec(arch)
    d = derive(spec)
    prog = program(spec, "loss_and_grad", d)
    names = labels(prog, d.graph.vars)
    items = walk(prog)
    if latex:
        return _render_latex(spec, d, prog, names, items)
    out = [f"{spec.name}: {spec.input.describe()}, "
           f"loss {spec.loss.type}" + (f", l2 {spec.l2:g}" if spec.l2 else "")]
    for layer in spec.layers:
        ps = ", ".join(f"{p.name} {p.shape}" for p in layer.params)
        extra = LAYER_TYPES[layer.type].describe(layer)
        extra = f" {extra}" if extra else ""
        out.append(f"  {layer.name}: {layer.type}{extra} {layer.in_shape} -> "
                   f"{layer.out_shape}" + (f"  [{ps}]" if ps else ""))
    out += ["", LEGEND]
    pad, after_loop = "", False
    for item in items:
        kind = item[0]
        if after_loop and kind in ("grad_of", "op", "head"):
            out.append("\nAfter the loop (whole sequences, all steps at once):")
            after_loop = False
        if kind == "head":
            _, key, first, backward = item
            if key is not None or pad:      # a ("grad_of", op) follows; a loop's own head
                continue
            if backward:
                out.append("\nTotal gradients (sum of all contributions):")
            elif first:
                out.append("\nForward pass and loss:")
        elif kind == "grad_of":
            out.append(f"\n{pad}Grad of  {op_equation(item[1], names)}")
        elif kind == "loop":
            info = item[1]
            out.append(f"\nLoop over time steps: {info['title']}.  Inside, each sequence is "
                       f"its step t (N rows); outside, it has {info['steps']}N rows:")
            pad = "  "
        elif kind == "end":
            pad, after_loop = "", True
        elif kind == "op":
            op = item[1]
            out.append(f"{pad}  {op_equation(op, names):<60s} {shape_text(_shape(prog, op))}")
    out.append("\nGradients:")
    for key, var in d.grads.items():
        out.append(f"  ∂L/∂{key} = {names.get(var, var)}")
    out += _per_sample_text(spec)
    return "\n".join(out) + "\n"


#: a gradient summand before its reduction over rows, by kind
_TERM_FORMS = {"product": "{u}ᵀ·{v}", "colsum": "1ᵀ·{v}", "scatter": "onehot({u})ᵀ·{v}",
               "steps": "(1_Nᵀ ⊗ I)·{v}"}


def _per_sample_text(spec: Spec) -> list:
    """How per_sample_grads, per_sample_grad_norms and clipped_grad form
    every parameter's gradient (the grad_terms program's summands, l2
    excluded) and the form of its per-sample norm chosen from the shapes."""
    prog, plans = per_sample_plan(spec)
    inputs = prog.inputs

    def label(i):
        name = inputs[0] if i < 0 else prog.outputs[i]
        return prog.vars[name].label

    out = ["\nPer-sample gradients (per_sample_grads, per_sample_grad_norms, clipped_grad):",
           "  each summand's rows split by sample (r rows per sample: steps t·N + n, or "
           "pixels n·r + p);",
           "  sample n's gradient is N times the sum over its rows; clipped: rows weighted "
           "by their sample's c_n;",
           "  norm: gram = ⟨U_nU_nᵀ, V_nV_nᵀ⟩ from two r×r Gram matrices, explicit = "
           "U_nᵀ·V_n formed"]
    for pt in plans:
        terms = " + ".join(_TERM_FORMS[t.kind].format(u=label(t.u) if t.kind in (
            "product", "scatter") else "", v=label(t.v)) for t in pt.terms) or "0"
        out.append(f"  {pt.key}: {terms}")
        out.append(f"      norm: {pt.reason()}")
    return out


def _render_latex(spec, d, prog, names, items) -> str:
    tn = tex_names(names)
    out = [f"% bpgen show --latex: {spec.name}, the derived equations (loss and gradient)",
           "% a fragment for a LaTeX document with \\usepackage{amsmath};",
           "% notation: docs/notation.md; blocks in the order of the generated code"]
    rows: list = []

    def flush():
        if rows:
            out.append(r"\begin{align*}")
            out.append(" \\\\\n".join(rows))
            out.append(r"\end{align*}")
            rows.clear()

    in_loop, after_loop, backward_seen = False, False, False
    for item in items:
        kind = item[0]
        if after_loop and kind in ("grad_of", "op", "head"):
            flush()
            out.append(r"\subsection*{After the loop (whole sequences, all steps at once)}")
            after_loop = False
        if kind == "head":
            _, key, first, backward = item
            if key is not None or in_loop or not (backward or first):
                continue
            flush()
            title = "Total gradients (sum of all contributions)" if backward else \
                "Forward pass and loss"
            out.append(r"\subsection*{" + title + "}")
        elif kind == "grad_of":
            flush()
            if not backward_seen:
                out.append(r"\subsection*{Backward pass (blocks in the order of the generated "
                           r"code)}")
                backward_seen = True
            out.append(r"\paragraph{Grad of} $" + op_equation(item[1], tn, latex=True) + "$")
        elif kind == "loop":
            flush()
            info = item[1]
            out.append(r"\subsection*{Loop over time steps: "
                       + tex_escape(info["label"] or "loop") + ", $"
                       + _tex_range(info) + "$}")
            in_loop = True
        elif kind == "end":
            flush()
            in_loop, after_loop = False, True
        elif kind == "op":
            op = item[1]
            lhs, rhs = op_equation(op, tn, latex=True).split(" = ", 1)
            rows.append(f"{lhs} &= {rhs} && {shape_text(_shape(prog, op), latex=True)}")
    flush()
    out.append(r"\subsection*{Gradients}")
    out.append(r"\begin{align*}")
    out.append(" \\\\\n".join(
        rf"\frac{{\partial L}}{{\partial {tex_label(d.graph.vars[d.params[k]].label)}}} "
        rf"&= {tn.get(v, v)}" for k, v in d.grads.items()))
    out.append(r"\end{align*}")
    return "\n".join(out) + "\n"


def _tex_range(info) -> str:
    """The loop's order in LaTeX, from its direction."""
    last = info["steps"] - 1
    return rf"t = {last}, \ldots, 0" if info["reverse"] else rf"t = 0, \ldots, {last}"
