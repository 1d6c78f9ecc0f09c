"""Stage 2: a validated Spec -> the forward graph, the loss and its gradient.

Each layer type is defined once here: its forward computation, composed from
the primitives of :mod:`bpgen.ir`.  Losses likewise.  Nothing in this file
differentiates anything: :func:`bpgen.ir.grad` derives the backward pass
from the forward graph with the primitives' rules and :func:`sympy.diff`.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .activations import activation_expr, softplus
from .ir import NSYM, Graph, grad
from .spec import LayerSpec, Spec

__all__ = ["Derivation", "derive", "LAYERS", "LOSSES"]


@dataclass
class Derivation:
    """The derived graph and the names of its interesting variables."""
    spec: Spec
    graph: Graph
    x: str                      # the input matrix, (N, features)
    y: str                      # the target matrix, (N, outputs) (one-hot for labels)
    params: dict                # param key ("l0.W") -> variable
    output: str                 # network output before the loss
    loss: str                   # the scalar loss, (1, 1)
    grads: dict                 # param key -> gradient variable
    n_forward: int              # ops[:n_forward] are the forward pass and loss


# ---------------------------------------------------------------------------
# layers: type -> forward(g, layer, x, params) -> output variable

def _dense(g: Graph, layer: LayerSpec, x: str, p: dict) -> str:
    n = layer.name
    xw = g.matmul(x, p["W"], base=f"{n}_XW", label=f"XW_{n}",
                  comment=f"{n}: affine part")
    z = g.map(g.sym(xw) + g.sym(p["b"]), base=f"{n}_Z", label=f"Z_{n}",
              comment=f"{n}: pre-activation Z = X·W + 1·b")
    act = activation_expr(layer.activation, g.sym(z), layer.alpha)
    return g.map(act, base=f"{n}_A", label=f"A_{n}",
                 comment=f"{n}: activation {layer.activation}")


def _flatten(g: Graph, layer: LayerSpec, x: str, p: dict) -> str:
    # activations are stored as (N, C*H*W) row-major matrices already
    return x


LAYERS = {"dense": _dense, "flatten": _flatten}


# ---------------------------------------------------------------------------
# losses: type -> (g, output, target) -> (N, 1) or (N, K) per-sample losses
# whose total over all entries is the summed (not yet averaged) loss

def _mse(g: Graph, o: str, y: str) -> str:
    return g.map((g.sym(o) - g.sym(y)) ** 2 / 2, base="loss_terms", label="ℓ",
                 comment="mse: 0.5 (O - Y)^2 per unit")


def _softmax_ce(g: Graph, o: str, y: str) -> str:
    # -log softmax(o)[label] = logsumexp(o) - o·onehot; logsumexp is shifted by
    # the row maximum m, which cancels exactly, so m carries no gradient.
    m = g.rowmax(o, base="o_max", label="m")
    e = g.map(sp.exp(g.sym(o) - g.sym(m)), base="o_exp", label="E",
              comment="exp(O - m), shifted for stability")
    s = g.sum(e, 1, base="o_expsum", label="s", comment="row sums of E")
    picked = g.sum(g.map(g.sym(y) * g.sym(o), base="o_pick", label="(Y⊙O)"), 1,
                   base="o_label", label="o_y", comment="the label's logit")
    return g.map(g.sym(m) + sp.log(g.sym(s)) - g.sym(picked), base="loss_terms",
                 label="ℓ", comment="logsumexp(O) - O[label] per sample")


def _sigmoid_bce(g: Graph, o: str, y: str) -> str:
    # -(y log s + (1-y) log(1-s)) with s = sigmoid(o) equals softplus(o) - y o,
    # which never takes the log of a rounded-to-zero probability.
    return g.map(softplus(g.sym(o)) - g.sym(y) * g.sym(o), base="loss_terms",
                 label="ℓ", comment="softplus(O) - Y⊙O per unit")


LOSSES = {"mse": _mse, "softmax_cross_entropy": _softmax_ce,
          "sigmoid_binary_cross_entropy": _sigmoid_bce}

REGULARISED = ("W", "Wx", "Wh")


def _matrix_shape(shape: tuple) -> tuple:
    """Parameters as matrices: a vector (n,) is a row (1, n)."""
    if len(shape) == 1:
        return (1, shape[0])
    if len(shape) == 2:
        return tuple(shape)
    return (shape[0], int(sp.prod(shape[1:])))


def derive(spec: Spec) -> Derivation:
    """Build the forward graph of ``spec``, its loss and the reverse pass."""
    g = Graph()
    x = g.var("x", ("N", spec.input.size), "input", "X")
    params = {}
    for layer in spec.layers:
        for pname, shape in layer.params:
            key = f"{layer.name}.{pname}"
            params[key] = g.var(f"{layer.name}_{pname}", _matrix_shape(shape), "param",
                                f"{pname}_{layer.name}", differentiable=True)
    h = x
    for layer in spec.layers:
        p = {pn: params[f"{layer.name}.{pn}"] for pn, _ in layer.params}
        h = LAYERS[layer.type](g, layer, h, p)
    output = h
    y = g.var("y", g.shape(output), "target", "Y")
    terms = LOSSES[spec.loss.type](g, output, y)
    total = g.sum(terms, None, base="loss_sum", label="Σℓ")
    loss_expr = g.sym(total) / NSYM
    if spec.l2:
        lam = sp.Float(spec.l2, 17)
        sq = []
        for key, var in params.items():
            if key.rsplit(".", 1)[1] in REGULARISED:
                sq.append(g.sym(g.sum(g.map(g.sym(var) ** 2, base=f"{var}_sq",
                                            label=f"{g.vars[var].label}^∘2"), None,
                                      base=f"{var}_sqsum", label=f"‖{g.vars[var].label}‖²")))
        loss_expr = loss_expr + lam / 2 * sp.Add(*sq)
    loss = g.map(loss_expr, base="loss", shape=(1, 1), label="L",
                 comment="mean over samples (+ 0.5 λ Σ‖W‖²)")
    n_forward = len(g.ops)
    grads = grad(g, loss, list(params.values()))
    grads = {key: grads[var] for key, var in params.items()}
    return Derivation(spec, g, x, y, params, output, loss, grads, n_forward)
