"""``rnn`` (Elman): h_t = f(x_t·Wx + b + h_(t-1)·Wh), h_(-1) = 0."""
from __future__ import annotations

from ..activations import activation_expr
from .base import register
from .recurrent import Cell, elman_options


@register
class Elman(Cell):
    name = "rnn"
    options = ("units", "activation", "alpha")

    def cell_options(self, ctx, raw, where):
        return elman_options(ctx, raw, where)

    def step(self, g, layer, n, xg, hp, par, block):
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        act = activation_expr(layer.activation, g.sym(xg) + g.sym(hw), layer.alpha)
        return g.map(act, base=f"{n}_H", label=f"H_{n}",
                     comment=f"{n}: h_t = {layer.activation}(x_t·Wx + b + h_(t-1)·Wh)")

    def describe(self, layer):
        return layer.activation
