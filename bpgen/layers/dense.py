"""``dense``: A = f(X·W + 1·b); on a sequence, at every step."""
from __future__ import annotations

import sympy as sp

from ..activations import activation_expr
from .base import LayerType, ParamSpec, activation_option, register


@register
class Dense(LayerType):
    name = "dense"
    options = ("units", "activation", "alpha")
    required = ("units",)
    hessian = "kronecker"

    def validate(self, ctx, raw, where, in_shape, inp):
        units = ctx.units(raw["units"], f"{where}.units")
        act, alpha = activation_option(ctx, raw, where)
        on_steps = inp.is_sequence and len(in_shape) == 2
        if len(in_shape) != 1 and not on_steps:
            ctx.fail(f"{where}", f"dense needs a flat input but gets per-sample shape "
                                 f"{in_shape}; add a flatten layer before it")
        fan_in = in_shape[-1]
        if fan_in * units > 10**8:
            ctx.fail(f"{where}.units", f"weight matrix {fan_in}x{units} is too large")
        out_shape = (in_shape[0], units) if on_steps else (units,)
        return ({"units": units, "activation": act, "alpha": alpha}, out_shape,
                (ParamSpec("W", (fan_in, units), "weight"),
                 ParamSpec("b", (units,), "bias")))

    def forward(self, g, layer, x, p):
        n = layer.name
        xw = g.matmul(x, p["W"], base=f"{n}_XW", label=f"XW_{n}",
                      comment=f"{n}: affine part")
        z = g.map(g.sym(xw) + g.sym(p["b"]), base=f"{n}_Z", label=f"Z_{n}",
                  comment=f"{n}: pre-activation")
        act = activation_expr(layer.activation, g.sym(z), layer.alpha)
        a = g.map(act, base=f"{n}_A", label=f"A_{n}",
                  comment=f"{n}: activation {layer.activation}")
        self.kronecker(g, layer, x, z, a, self.activation(layer))
        return a

    @staticmethod
    def activation(layer):
        """f as a SymPy function of one symbol (for f' and f'')."""
        z = sp.Dummy("z")
        return sp.Lambda(z, activation_expr(layer.activation, z, layer.alpha))

    def describe(self, layer):
        return layer.activation
