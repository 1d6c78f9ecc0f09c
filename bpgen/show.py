"""``bpgen show``: the derived equations in matrix form (text or LaTeX)."""
from __future__ import annotations

from .derivation import program
from .equations import op_equation
from .layers import LAYER_TYPES
from .network import derive
from .spec import load_spec

__all__ = ["render"]

_LEGEND = ("Notation: · matrix product, ⊙ elementwise product, ^∘2 elementwise square, "
           "ᵀ transpose, 1 a column of ones (1ᵀ·A sums the rows of A),\n"
           "δV = ∂L/∂V.  Shapes are (rows, cols) with N the batch size.")


def render(arch, latex: bool = False) -> str:
    """The derivation of ``arch`` (a path or dict) as printable text."""
    spec = load_spec(arch)
    d = derive(spec)
    prog = program(spec, "loss_and_grad", d)
    names = {name: (v.label or name) for name, v in d.graph.vars.items()}
    out = []
    if latex:
        out.append(f"% bpgen: {spec.name}, derived equations (loss and gradient)")
        out.append(r"\begin{align*}")
        rows = []
        for op in prog.ops:
            lhs = names[op.out]
            rhs = op_equation(op, names, latex=True).split(" = ", 1)[1]
            rows.append(f"{_tex_name(lhs)} &= {_tex_rhs(rhs, names)}")
        out.append(" \\\\\n".join(rows))
        out.append(r"\end{align*}")
        return "\n".join(out) + "\n"
    out.append(f"{spec.name}: {spec.input.kind} input {spec.input.shape}, "
               f"loss {spec.loss.type}" + (f", l2 {spec.l2:g}" if spec.l2 else ""))
    for layer in spec.layers:
        ps = ", ".join(f"{p.name} {p.shape}" for p in layer.params)
        extra = LAYER_TYPES[layer.type].describe(layer)
        extra = f" {extra}" if extra else ""
        out.append(f"  {layer.name}: {layer.type}{extra} {layer.in_shape} -> "
                   f"{layer.out_shape}" + (f"  [{ps}]" if ps else ""))
    out.append("")
    out.append(_LEGEND)
    current, loop, backward = object(), None, False
    out.append("\nForward pass and loss:")
    for op in prog.ops:
        backward = backward or op.grad_of is not None
        if op.loop != loop:
            loop = op.loop
            if loop is not None:
                info = prog.loops[loop]
                out.append(f"\nLoop over time steps: {info['title']} "
                           f"(inside: one step, N rows; a sequence outside):")
            else:
                out.append("\n\nAfter the loop (whole sequences, all steps at once):")
                if not backward:
                    current = None
            current = object()
        pad = "  " if loop is not None else ""
        if op.grad_of != current:
            current = op.grad_of
            if current is None and not backward:
                pass
            elif current is None:
                out.append(f"\n{pad}Total gradients (sum of all contributions):")
            else:
                fop = prog.forward_ops[current]
                out.append(f"\n{pad}Grad of  {op_equation(fop, names)}")
        shape = prog.vars[op.out].shape
        if loop is not None and shape[0] == prog.loops[loop]["seq"]:
            shape = ("N", shape[1])
        shape = "(" + ", ".join(map(str, shape)) + ")"
        out.append(f"{pad}  {op_equation(op, names):<60s} {shape}")
    out.append("\nGradients:")
    for key, var in d.grads.items():
        out.append(f"  ∂L/∂{key} = {names.get(var, var)}")
    return "\n".join(out) + "\n"


def _tex_name(label: str) -> str:
    return label.replace("δ", r"\delta ").replace("·", r"\,")


def _tex_rhs(rhs: str, names: dict) -> str:
    return rhs.replace("δ", r"\delta ").replace("·", r"\,")


_LOSS_CURVATURE = {
    "softmax_cross_entropy": "(diag(p) - p pᵀ) / N,  p = softmax(z)",
    "mse": "I / N",
    "sigmoid_binary_cross_entropy": "diag(σ(z) ⊙ (1 - σ(z))) / N",
}


def render_hessian(arch) -> str:
    """The block structure of the exact Hessian of ``arch`` in matrix form,
    then the derived Hessian-vector product (the R-operator program)."""
    spec = load_spec(arch)
    lines = [f"{spec.name}: structure of the exact Hessian H = ∂²L/∂θ², θ = flatten(params)",
             "",
             "Per sample n (row vectors; z_k = a_(k-1)·W_k + b_k, a_k = f_k(z_k); "
             "H = Σ_n H_n):",
             f"  A_L = ∂²ℓ/∂z_L² = {_LOSS_CURVATURE[spec.loss.type]}",
             "  A_k = D_k·W_(k+1)·A_(k+1)·W_(k+1)ᵀ·D_k + diag(f_k''(z_k) ⊙ q_k)",
             "        D_k = diag(f_k'(z_k)), q_k = ∂L/∂a_k  (the second term is what "
             "Gauss-Newton drops)",
             "  δ_k = ∂L/∂z_k,  J_(k→l) = ∂a_(l-1)/∂z_k,  M_kl = ∂z_l/∂z_k · A_l  (M_kk = A_k)",
             ""]
    dense = [lay for lay in spec.layers if LAYER_TYPES[lay.type].hessian == "kronecker"]
    recurrent = [lay for lay in spec.layers if LAYER_TYPES[lay.type].recurrent]
    other = [lay for lay in spec.layers if LAYER_TYPES[lay.type].hessian is None
             and not LAYER_TYPES[lay.type].recurrent]
    names = [lay.name for lay in dense]
    if dense:
        lines.append("Within a layer (Kronecker blocks; flat order of W is (in, units) "
                     "row-major, so the input factor comes first):")
        for lay in dense:
            (fi, fo), k = lay.params[0].shape, lay.name
            lines += [f"  H[{k}.W, {k}.W] = Σ_n (a_inᵀ·a_in) ⊗ A_{k}      ({fi}·{fo} × {fi}·{fo})",
                      f"  H[{k}.W, {k}.b] = Σ_n a_inᵀ ⊗ A_{k}             ({fi}·{fo} × {fo})",
                      f"  H[{k}.b, {k}.b] = Σ_n A_{k}                     ({fo} × {fo})"]
        if len(dense) > 1:
            lines += ["", "Across layers k < l: a Kronecker term plus a commutation-type "
                          "(Bishop δ) term that no sum of Kronecker products gives:",
                      "  H[W_k(p,q), W_l(i,j)] = Σ_n a_(k-1),p · ( a_(l-1),i · M_kl[q,j]"
                      "  +  J_(k→l)[q,i] · δ_l,j )"]
            for a, b in zip(names, names[1:]):
                lines.append(f"  e.g. H[{a}.W, {b}.W] = Σ_n (a_inᵀ·a_{a}) ⊗ M_{a},{b}"
                             f" + Σ_n a_inᵀ ⊗ (D_{a} ⊗ δ_{b}) (commuted)")
    if recurrent:
        lines += ["", "Recurrent layers share Wx, Wh, b over steps, so their blocks are sums "
                      "over pairs of steps (s, t):",
                  "  H[W, W] = Σ_n Σ_s Σ_t (x_sᵀ·x_t) ⊗ M_st + cross-time δ-terms through "
                  "h_(t-1) (every step's state depends on every earlier W)"]
    lines += ["", "bpgen computes H·v without forming H: the R-operator (forward mode) "
                  "over the derived forward and backward pass.  Derived program:", ""]
    if other:
        lines += ["", "Other layers (" + ", ".join(f"{lay.name}: {lay.type}" for lay in other)
                  + "): their blocks come from Hessian-vector products, "
                    "one column per parameter."]
    prog = program(spec, "hvp")
    all_names = {n: (v.label or n) for n, v in prog.vars.items()}
    for op in prog.ops:
        if op.out.startswith("r_") or any(a.startswith("v_") for a in op.args):
            shape = "(" + ", ".join(map(str, prog.vars[op.out].shape)) + ")"
            lines.append(f"  {op_equation(op, all_names):<62s} {shape}")
    lines.append("\nH·v for each parameter: " + ", ".join(
        f"{k} = {all_names.get(o, o)}" for k, o in zip(spec.param_shapes, prog.outputs)))
    return "\n".join(lines) + "\n"
