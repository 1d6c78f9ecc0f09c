"""``maxpool2d``: the maximum of each window, per channel: each window's
value at its first maximum, read from the maps in one pass (``take_argmax``
over the windows pattern: the windows are not unfolded into a matrix); the
error goes back to that arg-max (``put_argmax``, the same pattern)."""
from __future__ import annotations

from .base import LayerType, register
from .images import image_shape, window_output


def pool_options(ctx, raw, where, ltype, in_shape):
    c, h, w = image_shape(ctx, where, ltype, in_shape)
    k = ctx.pos_int(raw["size"], f"{where}.size")
    s = ctx.pos_int(raw.get("stride", k), f"{where}.stride")
    ho, wo = window_output(ctx, where, "window", (h, w), k, s)
    return {"size": k, "stride": s}, (c, ho, wo), ()


def pool_table_entries(layer) -> int:
    """The windows, (C·H_out·W_out) x k², and the transpose, C·H_out·W_out."""
    c, ho, wo = layer.out_shape
    return c * ho * wo * (layer.size * layer.size + 1)


def windows(g, layer, x):
    c, h, w = layer.in_shape
    k = layer.size
    rows = c * layer.out_shape[1] * layer.out_shape[2]
    return g.gather(x, ("windows", c, h, w, k, layer.stride), rows, k * k,
                    base=f"{layer.name}_win", label=f"Win_{layer.name}",
                    comment=f"{layer.name}: the {k}x{k} windows, one row each")


def back_to_maps(g, layer, v):
    rows = layer.out_shape[0] * layer.out_shape[1] * layer.out_shape[2]
    return g.gather(v, ("transpose", rows, 1), 1, rows, base=f"{layer.name}_Y",
                    label=f"Maps_{layer.name}", comment=f"{layer.name}: as (N, C·H_out·W_out)")


@register
class MaxPool2d(LayerType):
    name = "maxpool2d"
    options = ("size", "stride")
    required = ("size",)

    def check_input(self, ctx, where, in_shape, inp):
        image_shape(ctx, where, self.name, in_shape)

    def validate(self, ctx, raw, where, in_shape, inp):
        return pool_options(ctx, raw, where, self.name, in_shape)

    def forward(self, g, layer, x, p):
        c, h, w = layer.in_shape
        top = g.take_argmax(x, x, base=f"{layer.name}_max", label=f"M_{layer.name}",
                            comment=f"{layer.name}: each {layer.size}x{layer.size} "
                                    f"window's maximum",
                            pattern=("windows", c, h, w, layer.size, layer.stride))
        return back_to_maps(g, layer, top)

    def table_entries(self, layer):
        return pool_table_entries(layer)

    def describe(self, layer):
        return f"{layer.size}x{layer.size}, stride {layer.stride}"
