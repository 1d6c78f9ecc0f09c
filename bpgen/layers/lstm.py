"""``lstm``: gates [i, f, g, o] = [σ, σ, tanh, σ](x_t·Wx + b + h_(t-1)·Wh);
c_t = f ⊙ c_(t-1) + i ⊙ g, h_t = o ⊙ tanh(c_t)."""
from __future__ import annotations

import sympy as sp

from ..activations import sigmoid
from .base import register
from .recurrent import Cell, keep


@register
class LSTM(Cell):
    name = "lstm"
    gates = 4

    def step(self, g, layer, n, xg, hp, par, block):
        s = g.sym
        cp = g.state(("N", layer.units), base=f"{n}_cprev",
                     label=f"C_{n}(t{'+' if g.loops[g.loop]['reverse'] else '-'}1)")
        hw = g.matmul(hp, par("Wh"), base=f"{n}_HW", label=f"HW_{n}")
        gates = g.map(s(xg) + s(hw), base=f"{n}_G", label=f"G_{n}",
                      comment=f"{n}: gate pre-activations [i, f, g, o]")
        ig = g.map(sigmoid(block(gates, 0)), base=f"{n}_i", label=f"Ig_{n}",
                   comment=f"{n}: input gate")
        fg = g.map(sigmoid(block(gates, 1)), base=f"{n}_f", label=f"Fg_{n}",
                   comment=f"{n}: forget gate")
        gg = g.map(sp.tanh(block(gates, 2)), base=f"{n}_g", label=f"Cc_{n}",
                   comment=f"{n}: cell candidate")
        og = g.map(sigmoid(block(gates, 3)), base=f"{n}_o", label=f"Og_{n}",
                   comment=f"{n}: output gate")
        c = g.map(s(fg) * s(cp) + s(ig) * s(gg), base=f"{n}_C", label=f"C_{n}",
                  comment=f"{n}: c_t = f ⊙ c_(t-1) + i ⊙ g")
        h = g.map(s(og) * sp.tanh(s(c)), base=f"{n}_H", label=f"H_{n}",
                  comment=f"{n}: h_t = o ⊙ tanh(c_t)")
        g.bind_state(cp, keep(g, c, cp))
        return h
