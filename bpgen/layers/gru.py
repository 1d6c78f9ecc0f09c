"""``gru``, as in PyTorch: r, z = σ(x_t·Wx + bx + h_(t-1)·Wh + bh) (their
blocks), n = tanh(x_t·Wx_n + bx_n + r ⊙ (h_(t-1)·Wh_n + bh_n)),
h_t = (1 - z) ⊙ n + z ⊙ h_(t-1)."""
from __future__ import annotations

import sympy as sp

from ..activations import sigmoid
from .base import ParamSpec, register
from .recurrent import Cell


@register
class GRU(Cell):
    name = "gru"
    gates = 3
    input_bias = "bx"

    def params(self, fan_in, h, prefix=""):
        g = self.gates * h
        return (ParamSpec(f"{prefix}Wx", (fan_in, g), "weight"),
                ParamSpec(f"{prefix}Wh", (h, g), "recurrent_weight"),
                ParamSpec(f"{prefix}bx", (g,), "bias"),
                ParamSpec(f"{prefix}bh", (g,), "bias"))

    def step(self, g, layer, n, xg, hp, par, block):
        s = g.sym
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        hg = g.map(s(hw) + s(par("bh")), base=f"{n}_HG", label=f"HG_{n}",
                   comment=f"{n}: h_(t-1)·Wh + 1·bh")
        r = g.map(sigmoid(block(xg, 0) + block(hg, 0)), base=f"{n}_r", label=f"Rg_{n}",
                  comment=f"{n}: reset gate")
        z = g.map(sigmoid(block(xg, 1) + block(hg, 1)), base=f"{n}_z", label=f"Zg_{n}",
                  comment=f"{n}: update gate")
        nn = g.map(sp.tanh(block(xg, 2) + s(r) * block(hg, 2)), base=f"{n}_n",
                   label=f"Nc_{n}", comment=f"{n}: candidate n = tanh(.. + r ⊙ (..))")
        return g.map((1 - s(z)) * s(nn) + s(z) * s(hp), base=f"{n}_H", label=f"H_{n}",
                     comment=f"{n}: h_t = (1 - z) ⊙ n + z ⊙ h_(t-1)")
