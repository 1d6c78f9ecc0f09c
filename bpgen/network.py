"""Stage 2: a validated Spec -> the forward graph, the loss and its gradient.

Each layer type is defined once here: its forward computation, composed from
the primitives of :mod:`bpgen.ir`.  Losses likewise.  Nothing in this file
differentiates anything: :func:`bpgen.ir.grad` derives the backward pass
from the forward graph with the primitives' rules and :func:`sympy.diff`.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .activations import activation_expr, sigmoid, softplus
from .ir import NSYM, Graph, grad, seq_dim, tangents
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
    a = g.map(act, base=f"{n}_A", label=f"A_{n}",
              comment=f"{n}: activation {layer.activation}")
    g.layer_vars[n] = {"in": x, "z": z, "a": a}
    return a


def _flatten(g: Graph, layer: LayerSpec, x: str, p: dict) -> str:
    # activations are stored as (N, C*H*W) row-major matrices already
    return x


def _cell(g: Graph, layer: LayerSpec, x: str, p: dict, prefix: str,
          reverse: bool) -> str:
    """One recurrent cell over the whole sequence ``x`` (time-major).

    The input projection x·Wx (+ bias) of every step is one matrix product
    before the loop; the loop body is the cell's one-step map.
    """
    steps = layer.in_shape[0]
    h_units = layer.units
    n = layer.name + (f"_{prefix.rstrip('.')}" if prefix else "")
    cell = layer.cell
    s = g.sym

    def par(name):
        return p[prefix + name]

    xw = g.matmul(x, par("Wx"), base=f"{n}_XW", label=f"XW_{n}",
                  comment=f"{n}: input projection of every step at once")
    bias = par("bx") if cell == "gru" else par("b")
    xg = g.map(s(xw) + s(bias), base=f"{n}_XG", label=f"XG_{n}",
               comment=f"{n}: X·Wx + 1·b")
    g.loop_begin(steps, reverse=reverse, label=f"{n} ({cell})")
    hp = g.state(("N", h_units), base=f"{n}_hprev", label=f"H_{n}(prev)")

    def block(v, k):
        return s(g.cols(v, k * h_units, (k + 1) * h_units, base=f"{v}_{k}",
                        label=f"{g.vars[v].label}[{k}]"))

    if cell == "rnn":
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        act = activation_expr(layer.activation, s(xg) + s(hw), layer.alpha)
        h = g.map(act, base=f"{n}_H", label=f"H_{n}",
                  comment=f"{n}: h_t = {layer.activation}(x_t·Wx + b + h_(t-1)·Wh)")
    elif cell == "lstm":
        cp = g.state(("N", h_units), base=f"{n}_cprev", label=f"C_{n}(prev)")
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        gates = g.map(s(xg) + s(hw), base=f"{n}_G", label=f"G_{n}",
                      comment=f"{n}: gate pre-activations [i, f, g, o]")
        ig = g.map(sigmoid(block(gates, 0)), base=f"{n}_i", label=f"I_{n}",
                   comment=f"{n}: input gate")
        fg = g.map(sigmoid(block(gates, 1)), base=f"{n}_f", label=f"F_{n}",
                   comment=f"{n}: forget gate")
        gg = g.map(sp.tanh(block(gates, 2)), base=f"{n}_g", label=f"Gc_{n}",
                   comment=f"{n}: cell candidate")
        og = g.map(sigmoid(block(gates, 3)), base=f"{n}_o", label=f"O_{n}",
                   comment=f"{n}: output gate")
        c = g.map(s(fg) * s(cp) + s(ig) * s(gg), base=f"{n}_C", label=f"C_{n}",
                  comment=f"{n}: c_t = f ⊙ c_(t-1) + i ⊙ g")
        h = g.map(s(og) * sp.tanh(s(c)), base=f"{n}_H", label=f"H_{n}",
                  comment=f"{n}: h_t = o ⊙ tanh(c_t)")
        g.bind_state(cp, c)
    else:  # gru, as in PyTorch
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        hg = g.map(s(hw) + s(par("bh")), base=f"{n}_HG", label=f"HG_{n}",
                   comment=f"{n}: h_(t-1)·Wh + 1·bh")
        r = g.map(sigmoid(block(xg, 0) + block(hg, 0)), base=f"{n}_r", label=f"R_{n}",
                  comment=f"{n}: reset gate")
        z = g.map(sigmoid(block(xg, 1) + block(hg, 1)), base=f"{n}_z", label=f"Zg_{n}",
                  comment=f"{n}: update gate")
        nn = g.map(sp.tanh(block(xg, 2) + s(r) * block(hg, 2)), base=f"{n}_n",
                   label=f"Nc_{n}", comment=f"{n}: candidate n = tanh(.. + r ⊙ (..))")
        h = g.map((1 - s(z)) * s(nn) + s(z) * s(hp), base=f"{n}_H", label=f"H_{n}",
                  comment=f"{n}: h_t = (1 - z) ⊙ n + z ⊙ h_(t-1)")
    g.bind_state(hp, h)
    g.loop_end()
    return h


def _recurrent(g: Graph, layer: LayerSpec, x: str, p: dict) -> str:
    return _cell(g, layer, x, p, "", reverse=False)


def _birnn(g: Graph, layer: LayerSpec, x: str, p: dict) -> str:
    hf = _cell(g, layer, x, p, "fwd.", reverse=False)
    hb = _cell(g, layer, x, p, "bwd.", reverse=True)
    return g.concat([hf, hb], base=f"{layer.name}_H", label=f"H_{layer.name}")


LAYERS = {"dense": _dense, "flatten": _flatten, "rnn": _recurrent, "lstm": _recurrent,
          "gru": _recurrent, "birnn": _birnn}


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


def derive(spec: Spec, exact: bool = False, with_grad: bool = True) -> Derivation:
    """Build the forward graph of ``spec``, its loss and the reverse pass.

    ``exact`` ignores ``bptt.truncate`` (the gradient of the loss itself, as
    second-order products need); ``with_grad=False`` stops after the loss."""
    g = Graph()
    steps = spec.input.shape[0] if spec.input.kind == "sequence" else None
    if steps is None:
        x = g.var("x", ("N", spec.input.size), "input", "X")
    else:   # time-major: rows t*N .. t*N+N-1 are step t
        x = g.var("x", (seq_dim(steps), spec.input.shape[1]), "input", "X")
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
    scored = output
    count = NSYM
    if steps is not None and spec.output_shape[0] == steps and len(spec.output_shape) == 2:
        if spec.loss.steps == "last":
            scored = g.rows(output, steps - 1, base="out_last", label="O_last")
        else:
            count = NSYM * steps
    y = g.var("y", g.shape(scored), "target", "Y")
    terms = LOSSES[spec.loss.type](g, scored, y)
    total = g.sum(terms, None, base="loss_sum", label="Σℓ")
    loss_expr = g.sym(total) / count
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
    if not with_grad:
        return Derivation(spec, g, x, y, params, output, loss, {}, n_forward)
    grads = grad(g, loss, list(params.values()),
                 truncate=None if exact else spec.truncate)
    grads = {key: grads[var] for key, var in params.items()}
    return Derivation(spec, g, x, y, params, output, loss, grads, n_forward)


def derive_ggn(spec: Spec):
    """The generalised Gauss-Newton product G v = Jᵀ H_L J v (+ λ v on the
    regularised weights), J = ∂output/∂θ, H_L = ∂²L/∂output².

    Derived from three passes over the graph: the loss gradient w.r.t. the
    output (reverse mode through the loss ops only), the tangents of the
    forward pass and of that gradient (forward mode: R{dL/dO} = H_L·J·v
    because dL/dO depends on θ only through O), and a reverse pass from the
    output with that cotangent (Jᵀ·u).  Returns (derivation, v vars, outputs,
    forward ops)."""
    d = derive(spec, exact=True, with_grad=False)
    g = d.graph
    d_out = grad(g, d.loss, [d.output], stop={d.output})[d.output]
    forward_ops = list(g.ops[:d.n_forward])
    seeds = {p: g.var("v_" + p, g.vars[p].shape, "input", "V_" + g.vars[p].label)
             for p in d.params.values()}
    t = tangents(g, seeds)
    pv = list(d.params.values())
    if d_out in t:
        jtu = grad(g, None, pv, roots={d.output: t[d_out]})
    else:
        jtu = {p: g.map(sp.Integer(0), base="gv_" + p, shape=g.vars[p].shape) for p in pv}
    outs = []
    for key, p in d.params.items():
        out = jtu[p]
        if spec.l2 and key.rsplit(".", 1)[1] in REGULARISED:
            out = g.map(g.sym(out) + sp.Float(spec.l2, 17) * g.sym(seeds[p]),
                        base="gv_" + p, shape=g.vars[p].shape)
        outs.append(out)
    return d, list(seeds.values()), outs, forward_ops


def derive_curvature(spec: Spec):
    """What the Kronecker-structured Hessian of a network of dense layers is
    assembled from, per sample (row): for every dense layer its input, f'(Z)
    and f''(Z) (SymPy's first and second derivative of the activation), q =
    ∂L/∂A and δ = ∂L/∂Z; and the loss's curvature w.r.t. the output: ℓ''
    (SymPy's second derivative of the per-unit loss) for the elementwise
    losses, the softmax probabilities for the cross-entropy.

    Returns (derivation, [(layer, {"in", "d1", "d2", "q", "delta"})], loss
    curvature var, output vars in order)."""
    d = derive(spec, exact=True)
    g = d.graph
    outs, layers = [], []

    def keep(var):
        if g.vars[var].role != "temp":
            var = g.copy(var, base=f"{var}_copy")
        if var not in outs:
            outs.append(var)
        return outs.index(var)

    for layer in spec.layers:
        if layer.type != "dense":
            continue
        lv = g.layer_vars[layer.name]
        z = sp.Symbol("z")
        f = activation_expr(layer.activation, z, layer.alpha)
        d1 = g.map(sp.diff(f, z).subs(z, g.sym(lv["z"])), base=f"{layer.name}_d1",
                   shape=g.vars[lv["z"]].shape, label=f"f'(Z_{layer.name})")
        d2 = g.map(sp.diff(f, z, 2).subs(z, g.sym(lv["z"])), base=f"{layer.name}_d2",
                   shape=g.vars[lv["z"]].shape, label=f"f''(Z_{layer.name})")
        q = g.cotangents.get(lv["a"])
        delta = g.cotangents.get(lv["z"], q)
        if q is None:
            q = delta
        layers.append((layer, {"in": keep(lv["in"]), "d1": keep(d1), "d2": keep(d2),
                               "q": keep(q), "delta": keep(delta)}))
    out = g.sym(d.output)
    terms = g.ops[g.producer[_loss_terms_var(g)]].attrs["expr"]
    if spec.loss.type == "softmax_cross_entropy":
        e = [v for v in g.vars if v.startswith("o_exp") and not v.startswith("o_expsum")][0]
        s = [v for v in g.vars if v.startswith("o_expsum")][0]
        curv = g.map(g.sym(e) / g.sym(s), base="softmax_p", label="p")
    else:
        curv = g.map(sp.diff(terms, out, 2), base="loss_curv", shape=g.vars[d.output].shape,
                     label="ℓ''(O)")
    return d, layers, keep(curv), outs


def _loss_terms_var(g: Graph) -> str:
    return [v for v in g.vars if v == "loss_terms" or v.startswith("loss_terms")][0]
