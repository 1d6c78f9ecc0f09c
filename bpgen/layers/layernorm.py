"""``layernorm``: per sample (and step), over the features,
(a - mean) / sqrt(var + 1e-5) ⊙ g + b with var the biased variance, as
PyTorch's ``layer_norm`` over the last axis.  Composed from ``sum`` and
``map``, so its gradient, R-operator and Hessian are derived."""
from __future__ import annotations

import sympy as sp

from .base import LayerType, ParamSpec, register

EPS = 1e-5


@register
class LayerNorm(LayerType):
    name = "layernorm"

    def validate(self, ctx, raw, where, in_shape, inp):
        on_steps = inp.is_sequence and len(in_shape) == 2
        if len(in_shape) != 1 and not on_steps:
            ctx.fail(where, f"layernorm needs a flat input but gets per-sample shape "
                            f"{in_shape}; add a flatten layer before it")
        f = in_shape[-1]
        return {}, tuple(in_shape), (ParamSpec("g", (f,), "gain"),
                                     ParamSpec("b", (f,), "bias"))

    def forward(self, g, layer, x, p):
        n, s = layer.name, g.sym
        f = layer.in_shape[-1]
        total = g.sum(x, 1, base=f"{n}_sum", label=f"S_{n}",
                      comment=f"{n}: row sums of the input")
        xc = g.map(s(x) - s(total) / f, base=f"{n}_Xc", label=f"Xc_{n}",
                   comment=f"{n}: centred input (minus its row mean)")
        sq = g.sum(g.map(s(xc) ** 2, base=f"{n}_sq", label=f"Xc_{n}^∘2"), 1,
                   base=f"{n}_ss", label=f"Q_{n}", comment=f"{n}: row sums of squares")
        xhat = g.map(s(xc) / sp.sqrt(s(sq) / f + sp.Float(EPS, 17)), base=f"{n}_Xhat",
                     label=f"Xhat_{n}", comment=f"{n}: normalised by sqrt(variance + eps)")
        return g.map(s(xhat) * s(p["g"]) + s(p["b"]), base=f"{n}_A", label=f"A_{n}",
                     comment=f"{n}: gain and bias Xhat ⊙ g + b")
