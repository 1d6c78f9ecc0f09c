"""``avgpool2d``: the mean of each window, per channel: the windows unfolded
(one row each), then row sums over k²; the error spreads evenly back."""
from __future__ import annotations

from .base import LayerType, register
from .images import image_shape
from .maxpool2d import back_to_maps, pool_options, pool_table_entries, windows


@register
class AvgPool2d(LayerType):
    name = "avgpool2d"
    options = ("size", "stride")
    required = ("size",)

    def check_input(self, ctx, where, in_shape, inp):
        image_shape(ctx, where, self.name, in_shape)

    def validate(self, ctx, raw, where, in_shape, inp):
        return pool_options(ctx, raw, where, self.name, in_shape)

    def forward(self, g, layer, x, p):
        win = windows(g, layer, x)
        total = g.sum(win, 1, base=f"{layer.name}_sum", label=f"S_{layer.name}")
        mean = g.map(g.sym(total) / (layer.size * layer.size), base=f"{layer.name}_mean",
                     label=f"Mean_{layer.name}", comment=f"{layer.name}: each window's mean")
        return back_to_maps(g, layer, mean)

    def table_entries(self, layer):
        return pool_table_entries(layer)

    def describe(self, layer):
        return f"{layer.size}x{layer.size}, stride {layer.stride}"
