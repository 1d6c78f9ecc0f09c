"""``sigmoid_binary_cross_entropy``: -(y log s + (1-y) log(1-s)) per unit,
s = sigmoid(O); targets real values in [0, 1], the output's shape."""
from __future__ import annotations

import numpy as np

from ..activations import softplus
from .base import Loss, batch_count, register


@register
class SigmoidBinaryCrossEntropy(Loss):
    name = "sigmoid_binary_cross_entropy"
    target_kind = "real"
    target_range = (0.0, 1.0)
    curvature_form = "diagonal"           # ℓ'' = σ(o)(1 - σ(o)) per unit
    doc = "sigmoid binary cross-entropy per unit"
    curvature_text = "diag(σ(o) ⊙ (1 - σ(o))) / {n}"
    curvature_tex = (r"\frac{\operatorname{diag}\left(\sigma(o) \odot "
                     r"(1 - \sigma(o))\right)}{{n}}")

    def forward(self, g, o, y):
        # -(y log s + (1-y) log(1-s)) with s = sigmoid(o) equals softplus(o) - y o,
        # which never takes the log of a rounded-to-zero probability.
        terms = g.map(softplus(g.sym(o)) - g.sym(y) * g.sym(o), base="loss_terms",
                      label="ℓ", comment="softplus of the output minus target times output, per unit")
        return {"terms": terms, "output": o}

    # ---- reference ----

    def reference_value(self, out, y):
        # -(y log s + (1-y) log(1-s)) = softplus(o) - y o
        return float(np.sum(np.logaddexp(0.0, out) - y * out)) / batch_count(out)

    def reference_grad(self, out, y):
        e = np.exp(-np.abs(out))                 # sigmoid without overflow
        s = np.where(out >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return (s - y) / batch_count(out)

    def sample_targets(self, rng, shape, dtype):
        return rng.uniform(0.0, 1.0, size=shape).astype(dtype)
