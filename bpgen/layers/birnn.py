"""``birnn``: a cell (``cell: rnn|lstm|gru``) run forward and time-reversed,
outputs concatenated [fwd, bwd]; parameters under ``fwd.`` and ``bwd.``."""
from __future__ import annotations

from .base import LAYER_TYPES, LayerType, register
from .recurrent import run_cell, validate_recurrent

CELLS = ("rnn", "lstm", "gru")


@register
class BiRNN(LayerType):
    name = "birnn"
    options = ("units", "cell")
    required = ("units",)
    recurrent = True

    def allowed(self, ctx, raw, where) -> tuple:
        cell = ctx.choice(raw.get("cell", "rnn"), f"{where}.cell", CELLS, "cell")
        return self.options + LAYER_TYPES[cell].options[1:]

    def validate(self, ctx, raw, where, in_shape, inp):
        cell = LAYER_TYPES[raw.get("cell", "rnn")]
        return validate_recurrent(self, cell, ctx, raw, where, in_shape, inp)

    def forward(self, g, layer, x, p):
        cell = LAYER_TYPES[layer.cell]
        hf = run_cell(cell, g, layer, x, p, "fwd.", reverse=False)
        hb = run_cell(cell, g, layer, x, p, "bwd.", reverse=True)
        return g.concat([hf, hb], base=f"{layer.name}_H", label=f"H_{layer.name}")
