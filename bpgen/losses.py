"""The losses, each composed once from the primitives: type -> (g, output,
target) -> the per-sample (N, 1) or per-unit (N, K) loss terms whose total
is the summed (not yet averaged) loss.  Nothing here is differentiated by
hand."""
from __future__ import annotations

import sympy as sp

from .activations import softplus

__all__ = ["LOSSES"]


def _mse(g, o: str, y: str) -> str:
    return g.map((g.sym(o) - g.sym(y)) ** 2 / 2, base="loss_terms", label="ℓ",
                 comment="mse: half the squared error per unit")


def _softmax_ce(g, o: str, y: str) -> str:
    # -log softmax(o)[label] = logsumexp(o) - o·onehot; logsumexp is shifted by
    # the row maximum m, which cancels exactly, so m carries no gradient.
    m = g.rowmax(o, base="o_max", label="m")
    e = g.map(sp.exp(g.sym(o) - g.sym(m)), base="o_exp", label="E",
              comment="exponentials, shifted by the row maximum for stability")
    s = g.sum(e, 1, base="o_expsum", label="s", comment="row sums of the exponentials")
    picked = g.sum(g.map(g.sym(y) * g.sym(o), base="o_pick", label="(Y⊙O)"), 1,
                   base="o_label", label="o_y", comment="the label's logit")
    return g.map(g.sym(m) + sp.log(g.sym(s)) - g.sym(picked), base="loss_terms",
                 label="ℓ", comment="logsumexp(O) - O[label] per sample")


def _sigmoid_bce(g, o: str, y: str) -> str:
    # -(y log s + (1-y) log(1-s)) with s = sigmoid(o) equals softplus(o) - y o,
    # which never takes the log of a rounded-to-zero probability.
    return g.map(softplus(g.sym(o)) - g.sym(y) * g.sym(o), base="loss_terms",
                 label="ℓ", comment="softplus of the output minus target times output, per unit")


LOSSES = {"mse": _mse, "softmax_cross_entropy": _softmax_ce,
          "sigmoid_binary_cross_entropy": _sigmoid_bce}
