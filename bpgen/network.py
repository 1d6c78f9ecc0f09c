"""Stage 2a: a validated Spec -> the forward graph, the loss and its gradient.

The network is composed from the layer types' forward compositions
(:mod:`bpgen.layers`) and the losses (:mod:`bpgen.losses`).  Nothing in this
file differentiates anything: :func:`bpgen.ir.grad` derives the backward pass
from the forward graph with the primitives' rules and :func:`sympy.diff`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .ir import NSYM, Graph, grad
from .layers import LAYER_TYPES
from .losses import LOSSES
from .spec import Spec

__all__ = ["Derivation", "derive"]


@dataclass
class Derivation:
    """The derived graph and the names of its interesting variables."""
    spec: Spec
    graph: Graph
    x: str                      # the input matrix (the input kind's matrix_shape)
    y: str                      # the target matrix, (N, outputs) (one-hot for labels)
    params: dict                # param key ("l0.W") -> variable
    output: str                 # network output before the loss
    loss: str                   # the scalar loss, (1, 1)
    grads: dict                 # param key -> gradient variable
    n_forward: int              # ops[:n_forward] are the forward pass and loss
    #: the variables the loss's composition made that others read: "terms",
    #: "output" (the scored output) and those its curvature needs
    loss_vars: dict = field(default_factory=dict)
    #: a sequence input's mask inputs, after x (InputKind.mask_inputs); () for others
    masks: tuple = ()


def _matrix_shape(shape: tuple) -> tuple:
    """Parameters as matrices: a vector (n,) is a row (1, n)."""
    if len(shape) == 1:
        return (1, shape[0])
    if len(shape) == 2:
        return tuple(shape)
    return (shape[0], int(sp.prod(shape[1:])))


def derive(spec: Spec, exact: bool = False, with_grad: bool = True) -> Derivation:
    """Build the forward graph of ``spec``, its loss and the reverse pass.

    ``exact`` ignores ``bptt.truncate`` (the gradient of the loss itself, as
    second-order products need); ``with_grad=False`` stops after the loss.
    A sequence input's graph reads the input kind's per-(sample, step) masks
    after x (a call without ``lengths`` passes those of full lengths): the
    layers keep padding away from real steps, ``steps: last`` scores each
    sample's last real step and ``steps: all`` is the mean over the real
    (sample, step) pairs."""
    g = Graph()
    steps = spec.input.steps
    x = spec.input.graph_input(g)       # (N, F), or time-major (T*N, F): the input kind's
    masks = spec.input.mask_inputs(g, spec.truncate)
    params = {}
    for layer in spec.layers:
        for par in layer.params:
            key = f"{layer.name}.{par.name}"
            params[key] = g.var(f"{layer.name}_{par.name}", _matrix_shape(par.shape),
                                "param", "_".join([par.name.split(".")[-1], layer.name]
                                                  + par.name.split(".")[:-1]),
                                differentiable=True)
    h = x
    for layer in spec.layers:
        p = {par.name: params[f"{layer.name}.{par.name}"] for par in layer.params}
        h = LAYER_TYPES[layer.type].forward(g, layer, h, p)
    output = h
    scored = output
    count, per_step = NSYM, False
    if steps is not None and spec.output_shape[0] == steps and len(spec.output_shape) == 2:
        if spec.loss.steps == "last":
            if g.mask is not None:
                scored = _last_real(g, output, steps)
            scored = g.rows(scored, steps - 1, base="out_last", label="O_last")
        else:
            count, per_step = NSYM * steps, True
            if g.mask is not None:
                count = g.sym(g.sum(g.mask, None, base="real_steps", label="Σm"))
    y = g.var("y", g.shape(scored), "target", "Y")
    loss_vars = LOSSES[spec.loss.type].forward(g, scored, y)
    terms = loss_vars["terms"]
    if g.mask is not None and per_step:
        terms = g.map(g.sym(terms) * g.sym(g.mask), base="real_terms", label="m ⊙ ℓ",
                      comment="the terms of real steps only")
    total = g.sum(terms, None, base="loss_sum", label="Σℓ")
    loss_expr = g.sym(total) / count
    if spec.l2:
        lam = sp.Float(spec.l2, 17)
        sq = []
        for key in spec.l2_keys:
            var = params[key]
            square = g.map(g.sym(var) ** 2, base=f"{var}_sq", label=f"{g.vars[var].label}^∘2")
            sq.append(g.sym(g.sum(square, None, base=f"{var}_sqsum",
                                  label=f"‖{g.vars[var].label}‖²")))
        loss_expr = loss_expr + lam / 2 * sp.Add(*sq)
    loss = g.map(loss_expr, base="loss", shape=(1, 1), label="L",
                 comment="mean over samples" + (" + 0.5 λ Σ‖W‖²" if spec.l2 else ""))
    n_forward = len(g.ops)
    if not with_grad:
        return Derivation(spec, g, x, y, params, output, loss, {}, n_forward, loss_vars,
                          masks=masks)
    grads = grad(g, loss, list(params.values()),
                 truncate=None if exact else spec.truncate)
    grads = {key: grads[var] for key, var in params.items()}
    return Derivation(spec, g, x, y, params, output, loss, grads, n_forward, loss_vars,
                      masks=masks)


def _last_real(g: Graph, output: str, steps: int) -> str:
    """The output held through padding: o_t = m_t ⊙ z_t + (1 - m_t) ⊙ o_(t-1),
    so that its last step is each sample's last real step (a loop of maps:
    its derivatives are derived)."""
    m, cols = g.sym(g.mask), g.vars[output].shape[1]
    g.loop_begin(steps, label="the last real step", truncated=False)
    prev = g.state(("N", cols), base="out_held_prev", label="O_held(t-1)")
    held = g.map(m * g.sym(output) + (1 - m) * g.sym(prev), base="out_held", label="O_held",
                 comment="each sample's output at its last real step so far")
    g.bind_state(prev, held)
    g.loop_end()
    return held
