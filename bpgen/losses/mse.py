"""``mse``: 0.5 (O - Y)² per unit; targets real, the output's shape."""
from __future__ import annotations

import numpy as np

from .base import Loss, batch_count, register


@register
class MeanSquaredError(Loss):
    name = "mse"
    target_kind = "real"
    curvature_form = "diagonal"           # ℓ'' = 1 per unit
    doc = r"mean squared error $\frac{1}{2} (O - Y)^{\circ 2}$ per unit"
    curvature_text = "I / {n}"
    curvature_tex = r"\frac{I}{{n}}"

    def forward(self, g, o, y):
        terms = g.map((g.sym(o) - g.sym(y)) ** 2 / 2, base="loss_terms", label="ℓ",
                      comment="mse: half the squared error per unit")
        return {"terms": terms, "output": o}

    def reference_value(self, out, y):
        d = out - y
        return 0.5 * float(np.sum(d * d)) / batch_count(out)

    def reference_grad(self, out, y):
        return (out - y) / batch_count(out)

    def sample_targets(self, rng, shape, dtype):
        return rng.standard_normal(shape).astype(dtype)
