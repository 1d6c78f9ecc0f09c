"""``bpgen show``: the derived equations in matrix form (text or LaTeX)."""
from __future__ import annotations

from .codegen import programs
from .equations import op_equation
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
    prog = programs(d)["loss_and_grad"]
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
        ps = ", ".join(f"{p} {s}" for p, s in layer.params)
        extra = f" {layer.activation}" if layer.type == "dense" else ""
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
