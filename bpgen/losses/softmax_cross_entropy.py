"""``softmax_cross_entropy``: -log softmax(O)[label] per row; targets
integer class labels (one-hot rows Y in the generated code)."""
from __future__ import annotations

import numpy as np
import sympy as sp

from .base import Loss, batch_count, register


@register
class SoftmaxCrossEntropy(Loss):
    name = "softmax_cross_entropy"
    target_kind = "labels"
    curvature_form = "softmax"            # diag(p) - p pᵀ, p = softmax(O)
    rank_deficit = 1                      # its rows sum to 0
    doc = "softmax cross-entropy against integer labels (one-hot $Y$)"
    curvature_text = "(diag(p) - pᵀ·p) / {n},  p = softmax(o)"
    curvature_tex = (r"\frac{\operatorname{diag}(p) - p^{\top} \cdot p}{{n}},\quad "
                     r"p = \operatorname{softmax}(o)")

    def validate(self, ctx, where, out_shape):
        if out_shape[-1] < 2:
            ctx.fail(where, f"{self.name} needs at least 2 output units")

    def forward(self, g, o, y):
        # -log softmax(o)[label] = logsumexp(o) - o·onehot; logsumexp is shifted by
        # the row maximum m, which cancels exactly, so m carries no gradient.
        m = g.rowmax(o, base="o_max", label="m")
        e = g.map(sp.exp(g.sym(o) - g.sym(m)), base="o_exp", label="E",
                  comment="exponentials, shifted by the row maximum for stability")
        s = g.sum(e, 1, base="o_expsum", label="s", comment="row sums of the exponentials")
        picked = g.sum(g.map(g.sym(y) * g.sym(o), base="o_pick", label="(Y⊙O)"), 1,
                       base="o_label", label="o_y", comment="the label's logit")
        terms = g.map(g.sym(m) + sp.log(g.sym(s)) - g.sym(picked), base="loss_terms",
                      label="ℓ", comment="logsumexp(O) - O[label] per sample")
        return {"terms": terms, "output": o, "exp": e, "expsum": s}

    def curvature(self, g, v):
        """p = E / s, the probabilities, from the forward pass's E and s."""
        return g.map(g.sym(v["exp"]) / g.sym(v["expsum"]), base="softmax_p", label="p")

    # ---- reference ----

    @staticmethod
    def _log_softmax(out):
        m = np.max(out, axis=-1, keepdims=True)
        lse = m + np.log(np.sum(np.exp(out - m), axis=-1, keepdims=True))
        return out - lse

    @staticmethod
    def _softmax(out):
        m = np.max(out, axis=-1, keepdims=True)
        e = np.exp(out - m)
        return e / np.sum(e, axis=-1, keepdims=True)

    def reference_value(self, out, y):
        picked = np.take_along_axis(self._log_softmax(out), y[..., None], axis=-1)
        return -float(np.sum(picked)) / batch_count(out)

    def reference_grad(self, out, y):
        one_hot = (y[..., None] == np.arange(out.shape[-1])).astype(np.float64)
        return (self._softmax(out) - one_hot) / batch_count(out)

    def sample_targets(self, rng, shape, dtype):
        """int64 labels in [0, K), of ``shape`` without its last axis."""
        return rng.integers(0, shape[-1], size=shape[:-1], dtype=np.int64)
