"""``bpgen show``: the derived equations in matrix form (text or LaTeX), and
the block structure of the exact Hessian (``--hessian``).

The notation is the one of ``docs/notation.md``; the backward pass is
grouped in blocks exactly as the generated code is (``Grad of`` heads from
:meth:`bpgen.backends.common.emitter.Emitter.blocks`).  :func:`walk` and
:func:`hessian_items` are shared with ``bpgen doc``.
"""
from __future__ import annotations

from .backends.common.emitter import Emitter
from .derivation import assembly, program, structured
from .equations import labels, op_equation, tex_key, tex_label, tex_names, tex_roman
from .ir import Op
from .layers import LAYER_TYPES
from .network import derive
from .spec import Spec, load_spec

__all__ = ["render", "render_hessian", "walk", "hessian_items", "shape_text", "tex_escape",
           "LEGEND"]

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
    out = [f"{spec.name}: {spec.input.kind} input {spec.input.shape}, "
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
    return "\n".join(out) + "\n"


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
                       + tex_escape(info["title"].split(", t = ")[0]) + ", $"
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
    last = info["steps"] - 1
    return (rf"t = {last}, \ldots, 0" if info["title"].endswith(f"t = {last} .. 0")
            else rf"t = 0, \ldots, {last}")


# ---- bpgen show --hessian ---------------------------------------------------

_LOSS_CURVATURE = {
    "softmax_cross_entropy": ("(diag(p) - pᵀ·p) / {n},  p = softmax(o)",
                              r"\frac{\operatorname{diag}(p) - p^{\top} \cdot p}{{n}},\quad "
                              r"p = \operatorname{softmax}(o)"),
    "mse": ("I / {n}", r"\frac{I}{{n}}"),
    "sigmoid_binary_cross_entropy": ("diag(σ(o) ⊙ (1 - σ(o))) / {n}",
                                     r"\frac{\operatorname{diag}\left(\sigma(o) \odot "
                                     r"(1 - \sigma(o))\right)}{{n}}"),
}


def _row(label: str) -> tuple:
    """A matrix label's one-sample row: ``A_l0`` -> ``a_l0`` (text, LaTeX)."""
    row = label[:1].lower() + label[1:]
    return row, tex_label(row)


def hessian_items(arch) -> list:
    """The content of ``bpgen show --hessian``: ``("title", text, latex)``,
    ``("text", prose, latex prose)`` (the LaTeX prose is plain ASCII with
    ``$...$`` math, so it is Markdown too) and ``("eq", text, latex, shape
    or "")``."""
    spec = _spec(arch)
    d = derive(spec)
    steps = spec.input.shape[0] if spec.input.kind == "sequence" else None
    per_step = (steps is not None and len(spec.output_shape) == 2
                and spec.output_shape[0] == steps and spec.loss.steps != "last")
    n_text, n_tex = ("(N T)", "N T") if per_step else ("N", "N")
    curv_text, curv_tex = _LOSS_CURVATURE[spec.loss.type]
    lam = " + λ I" if spec.l2 else ""
    lam_tex = r" + \lambda I" if spec.l2 else ""
    items = [
        ("title", f"{spec.name}: structure of the exact Hessian ∇²L = ∂²L/∂θ², "
                  "θ = flatten(params)",
         rf"$\mathrm{{{spec.name.replace('_', chr(92) + '_')}}}$: structure of the exact "
         r"Hessian $\nabla^{2} L = \partial^{2} L / \partial \theta^{2}$, "
         r"$\theta = \operatorname{flatten}(\mathrm{params})$"),
        ("text", "Per sample n, in row vectors: a lowercase letter is one row of the matrix "
                 "of the same name (x of X, z_k of Z_k, a_k of A_k, o of the network output); "
                 "layer k computes z_k from the previous layer's a_(k-1) (a_0 = x), and the "
                 "Hessian is a sum over the samples" + (" (plus λ I on the weight blocks, "
                                                        "from l2)" if lam else "") + ":",
         "Per sample $n$, in row vectors: a lowercase letter is one row of the matrix of the "
         "same name ($x$ of $X$, $z_k$ of $Z_k$, $a_k$ of $A_k$, $o$ of the network output); "
         "layer $k$ computes $z_k$ from the previous layer's $a_{k-1}$ ($a_0 = x$), and the "
         "Hessian is a sum over the samples" + (r" (plus $\lambda I$ on the weight blocks, "
                                                "from l2)" if lam else "") + ":"),
        ("eq", "z_k = a_(k-1)·W_k + b_k,  a_k = f_k(z_k),  ∇²L = Σ_n ∇²L_n" + lam,
         r"z_k = a_{k-1} \cdot W_k + b_k,\quad a_k = f_k(z_k),\quad "
         r"\nabla^{2} L = \sum_n \nabla^{2} L_n" + lam_tex, ""),
        ("text", "The curvature with respect to a pre-activation, Λ_k = ∂²L_n/∂z_k², starts "
                 "at the loss and is propagated backwards like δz_k:",
         r"The curvature with respect to a pre-activation, $\Lambda_k = \partial^{2} L_n / "
         r"\partial z_k^{2}$, starts at the loss and is propagated backwards like "
         r"$\delta z_k$:"),
        ("eq", "Λ_out = ∂²L_n/∂o² = " + curv_text.format(n=n_text),
         r"\Lambda_{\mathrm{out}} = \frac{\partial^{2} L_n}{\partial o^{2}} = "
         + curv_tex.replace("{n}", n_tex), ""),
        ("eq", "Λ_k = D_k·W_(k+1)·Λ_(k+1)·W_(k+1)ᵀ·D_k + diag(f_k''(z_k) ⊙ δa_k)",
         r"\Lambda_k = D_k \cdot W_{k+1} \cdot \Lambda_{k+1} \cdot W_{k+1}^{\top} \cdot D_k"
         r" + \operatorname{diag}\left(f''_k(z_k) \odot \delta a_k\right)", ""),
        ("text", "with W_(k+1)·Λ_(k+1)·W_(k+1)ᵀ replaced by Λ_out for the output layer, "
                 "D_k = diag(f_k'(z_k)) and δa_k = ∂L/∂a_k (the second term is what "
                 "Gauss-Newton drops); further",
         r"with $W_{k+1} \cdot \Lambda_{k+1} \cdot W_{k+1}^{\top}$ replaced by "
         r"$\Lambda_{\mathrm{out}}$ for the output layer, $D_k = \operatorname{diag}"
         r"(f'_k(z_k))$ and $\delta a_k = \partial L / \partial a_k$ (the second term is what "
         "Gauss-Newton drops); further"),
        ("eq", "δz_k = ∂L/∂z_k,  J_(k→l) = ∂a_(l-1)/∂z_k,  Λ_kl = ∂z_l/∂z_k·Λ_l  (Λ_kk = Λ_k)",
         r"\delta z_k = \frac{\partial L}{\partial z_k},\quad J_{k \to l} = "
         r"\frac{\partial a_{l-1}}{\partial z_k},\quad \Lambda_{kl} = "
         r"\frac{\partial z_l}{\partial z_k} \cdot \Lambda_l \quad (\Lambda_{kk} = \Lambda_k)",
         ""),
    ]
    dense = [lay for lay in spec.layers if LAYER_TYPES[lay.type].hessian == "kronecker"]
    recurrent = [lay for lay in spec.layers if LAYER_TYPES[lay.type].recurrent]
    other = [lay for lay in spec.layers if LAYER_TYPES[lay.type].hessian is None
             and not LAYER_TYPES[lay.type].recurrent]
    rows = {lay.name: _row(d.graph.vars[d.graph.layer_vars[lay.name]["in"]].label)
            for lay in dense}
    if structured(spec):
        items += _assembly_items(spec, d)
    elif dense:
        items.append(("text", "Within a layer, Kronecker blocks (the flat order of W is "
                              "(in, units) row-major, so the input factor comes first):",
                      "Within a layer, Kronecker blocks (the flat order of $W$ is "
                      "(in, units) row-major, so the input factor comes first):"))
        for lay in dense:
            (fi, fo), k = lay.params[0].shape, lay.name
            (a, at), lk = rows[k], tex_roman(k)
            key = tex_key(k + ".W"), tex_key(k + ".b")
            items += [
                ("eq", f"∇²L[{k}.W, {k}.W] = Σ_n ({a}ᵀ·{a}) ⊗ Λ_{k}" + lam,
                 rf"\nabla^{{2}} L[{key[0]}, {key[0]}] = \sum_n "
                 rf"\left({{{at}}}^{{\top}} \cdot {at}\right) \otimes \Lambda_{{{lk}}}" + lam_tex,
                 f"{fi * fo} × {fi * fo}"),
                ("eq", f"∇²L[{k}.W, {k}.b] = Σ_n {a}ᵀ ⊗ Λ_{k}",
                 rf"\nabla^{{2}} L[{key[0]}, {key[1]}] = \sum_n "
                 rf"{{{at}}}^{{\top}} \otimes \Lambda_{{{lk}}}", f"{fi * fo} × {fo}"),
                ("eq", f"∇²L[{k}.b, {k}.b] = Σ_n Λ_{k}",
                 rf"\nabla^{{2}} L[{key[1]}, {key[1]}] = \sum_n \Lambda_{{{lk}}}",
                 f"{fo} × {fo}")]
        if len(dense) > 1:
            items += [
                ("text", "Across layers k < l: a Kronecker term plus a commutation-type "
                         "(Bishop δ) term that no sum of Kronecker products gives; entry by "
                         "entry, with (M)_ij the entry (i, j) of M:",
                 r"Across layers $k < l$: a Kronecker term plus a commutation-type "
                 r"(Bishop $\delta$) term that no sum of Kronecker products gives; entry by "
                 r"entry, with $(M)_{ij}$ the entry $(i, j)$ of $M$:"),
                ("eq", "∂²L/∂(W_k)_pq ∂(W_l)_ij = Σ_n (a_(k-1))_p · ((a_(l-1))_i · (Λ_kl)_qj"
                       " + (J_(k→l))_qi · (δz_l)_j)",
                 r"\frac{\partial^{2} L}{\partial (W_k)_{pq}\, \partial (W_l)_{ij}} = \sum_n "
                 r"(a_{k-1})_p \left((a_{l-1})_i\, (\Lambda_{kl})_{qj} + "
                 r"(J_{k \to l})_{qi}\, (\delta z_l)_j\right)", "")]
            for first, second in zip(dense, dense[1:]):
                k, m = first.name, second.name
                (a, at), (b, bt) = rows[k], rows[m]
                items.append((
                    "eq", f"e.g. ∇²L[{k}.W, {m}.W] = Σ_n ({a}ᵀ·{b}) ⊗ Λ_{k},{m}"
                          f" + Σ_n {a}ᵀ ⊗ (D_{k} ⊗ δz_{m})  (commuted)",
                    rf"\nabla^{{2}} L[{tex_key(k + '.W')}, {tex_key(m + '.W')}] = \sum_n "
                    rf"\left({{{at}}}^{{\top}} \cdot {bt}\right) \otimes "
                    rf"\Lambda_{{{tex_roman(k)},{tex_roman(m)}}} + "
                    rf"\sum_n {{{at}}}^{{\top}} \otimes "
                    rf"\left(D_{{{tex_roman(k)}}} \otimes \delta z_{{{tex_roman(m)}}}\right)"
                    r"\quad \text{(commuted)}", ""))
    for lay in recurrent:
        k, lk = lay.name, tex_roman(lay.name)
        items += [
            ("text", f"The recurrent layer {k} shares Wx, Wh and its biases over the steps, "
                     "so its blocks are sums over pairs of steps (s, t), with "
                     f"Λ_{k}(s,t) = ∂²L_n/∂g(s)∂g(t) for the row g of its gate "
                     "pre-activations (every step's state depends on every earlier step's "
                     "use of Wh):",
             f"The recurrent layer ${lk}$ shares $\\mathit{{Wx}}$, $\\mathit{{Wh}}$ and its "
             "biases over the steps, so its blocks are sums over pairs of steps $(s, t)$, with "
             rf"$\Lambda_{{{lk}}}(s,t) = \partial^{{2}} L_n / \partial g(s)\, \partial g(t)$ "
             "for the row $g$ of its gate pre-activations (every step's state depends on every "
             r"earlier step's use of $\mathit{Wh}$):"),
            ("eq", f"∇²L[{k}.Wx, {k}.Wx] = Σ_n Σ_s Σ_t (x(s)ᵀ·x(t)) ⊗ Λ_{k}(s,t)"
                   f" + cross-time δ-terms through h_{k}(t-1)",
             rf"\nabla^{{2}} L[{tex_key(k + '.Wx')}, {tex_key(k + '.Wx')}] = \sum_n \sum_s \sum_t "
             rf"\left(x(s)^{{\top}} \cdot x(t)\right) \otimes \Lambda_{{{lk}}}(s,t) + "
             rf"\text{{cross-time }} \delta \text{{-terms through }} h_{{{lk}}}(t-1)", "")]
    if other:
        which = ", ".join(f"{lay.name}: {lay.type}" for lay in other)
        which_tex = ", ".join(f"${tex_roman(lay.name)}$: {lay.type}" for lay in other)
        rest = ("): their blocks come from Hessian-vector products (one forward and backward "
                "pass, then the tangent statements below for many columns at once).")
        items.append(("text", f"Other layers ({which}{rest}", f"Other layers ({which_tex}{rest}"))
    items.append(("text", "bpgen computes ∇²L·v without forming ∇²L: the R-operator "
                          "R{V} = d/dε V(θ + ε v) at ε = 0 (forward mode) over the derived "
                          "forward and backward pass, so that R{δW} is the block of W of "
                          "∇²L·v (V_W: the block of v for W).  The derived program "
                          "(the statements that compute a tangent or read v):",
                  r"bpgen computes $\nabla^{2} L \cdot v$ without forming $\nabla^{2} L$: the "
                  r"R-operator $\mathcal{R}\{V\} = \frac{d}{d\varepsilon} V(\theta + "
                  r"\varepsilon v)\big|_{\varepsilon = 0}$ (forward mode) over the derived "
                  r"forward and backward pass, so that $\mathcal{R}\{\delta W\}$ is the block of "
                  r"$W$ of $\nabla^{2} L \cdot v$ ($V_W$: the block of $v$ for $W$). The derived "
                  "program (the statements that compute a tangent or read $v$):"))
    prog = program(spec, "hvp")
    names = labels(prog)
    tn = tex_names(names)
    for op in prog.ops:
        if op.out.startswith("r_") or any(a.startswith("v_") for a in op.args):
            items.append(("eq", op_equation(op, names), op_equation(op, tn, latex=True),
                          _shape_pair(prog, op)))
    items.append(("text", "∇²L·v for each parameter:",
                  r"$\nabla^{2} L \cdot v$ for each parameter:"))
    for key, o in zip(spec.param_shapes, prog.outputs):
        items.append(("eq", f"(∇²L·v)[{key}] = {names.get(o, o)}",
                      rf"(\nabla^{{2}} L \cdot v)[{tex_key(key)}] = {tn.get(o, o)}", ""))
    items.append(("text", "hmp(V), and hessian() where it is formed from Hessian-vector "
                          "products, run the forward and backward pass once and the tangent "
                          "statements above for a chunk of K columns of V at once: each tangent "
                          "r × c is stored r × K × c (the directions as extra columns), so a "
                          "product with a factor that does not depend on v is one product K "
                          "times larger.",
                  r"hmp($V$), and hessian() where it is formed from Hessian-vector products, "
                  r"run the forward and backward pass once and the tangent statements above "
                  r"for a chunk of $K$ columns of $V$ at once: each tangent $r \times c$ is "
                  r"stored $r \times K \times c$ (the directions as extra columns), so a "
                  r"product with a factor that does not depend on $v$ is one product $K$ "
                  r"times larger."))
    return items


def _assembly_items(spec, d) -> list:
    """The derived assembly of ``hessian`` (every layer dense): one item per
    batched op, its equation and the shape it writes."""
    asm = assembly(spec, "hessian", d)
    items = [("text", "bpgen assembles ∇²L from these blocks as follows: the derived assembly "
                      "program of hessian(), one statement per batched operation ([n]: sample "
                      "n; ã = [a, 1], so that a layer's bias is the weight of a constant input "
                      "and its (W, b) block is one Kronecker block; H[rows; cols]: the block "
                      "of those parameters' rows and columns):",
              r"bpgen assembles $\nabla^{2} L$ from these blocks as follows: the derived "
              r"assembly program of hessian(), one statement per batched operation ($[n]$: "
              r"sample $n$; $\tilde a = [a, 1]$, so that a layer's bias is the weight of a "
              r"constant input and its $(W, b)$ block is one Kronecker block; "
              r"$H[\mathrm{rows}; \mathrm{cols}]$: the block of those parameters' rows and "
              r"columns):")]
    for op in asm.ops:
        text, tex = op.equation(asm)
        items.append(("eq", text, tex, _op_shape(asm, op)))
    return items


def _op_shape(asm, op) -> str:
    """What an assembly op writes, as "rows × cols" (per sample: "N × ...")."""
    size = getattr(op, "sizes", None)
    if size is not None:
        pk1, ck, pl1, cl = size(asm)
        return f"{pk1 * ck} × {pl1 * cl}"
    if op.name == "mirror":
        return f"{op.ncols} × {op.nrows}"
    if op.name == "add_l2":
        return f"{op.stop - op.start} × {op.stop - op.start}"
    return " × ".join(str(dim) for dim in asm.t(op.writes()[0]).shape)


def _shape_pair(prog, op) -> str:
    return shape_text(_shape(prog, op)).strip("()").replace(", ", " × ")


def render_hessian(arch, latex: bool = False) -> str:
    """The block structure of the exact Hessian of ``arch`` in matrix form,
    then the derived Hessian-vector product (the R-operator program); as
    text, or as a LaTeX fragment (``\\usepackage{amsmath}``)."""
    items = hessian_items(arch)
    out: list = []
    if not latex:
        for item in items:
            if item[0] == "title":
                out += [item[1]]
            elif item[0] == "text":
                out += ["", item[1]]
            else:
                _, text, _, shape = item
                out.append(f"  {text:<62s} ({shape})" if shape else f"  {text}")
        return "\n".join(out) + "\n"
    rows: list = []

    def flush():
        if rows:
            out.append(r"\begin{align*}")
            out.append(" \\\\\n".join(rows))
            out.append(r"\end{align*}")
            rows.clear()

    for item in items:
        if item[0] == "title":
            out += ["% bpgen show --hessian --latex: a fragment for a LaTeX document with "
                    "\\usepackage{amsmath}; notation: docs/notation.md",
                    r"\subsection*{" + item[2] + "}"]
        elif item[0] == "text":
            flush()
            out += ["", item[2]]
        else:
            _, _, tex, shape = item
            lhs, eq, rhs = tex.partition(" = ")
            row = f"{lhs} &= {rhs}" if eq and lhs.count("{") == lhs.count("}") else f"& {tex}"
            rows.append(row + (" && " + shape.replace("×", r"\times") if shape else ""))
    flush()
    return "\n".join(out) + "\n"
