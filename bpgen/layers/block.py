"""``block``: a list of layers applied in order (the same syntax as the
file's ``layers``), with ``residual`` the block's input added to its output
(x + f(x): the shapes must match).  Its parameters are its layers', keyed
``"<block>.<layer>.<param>"`` (an inner layer's default name is ``l<i>``,
its position in the block's own list); blocks nest.  Nothing is derived
here: the forward composition is the inner layers' own, one after the
other, plus a ``map`` for the sum, so the gradient, R-operator and Hessian
follow from them.  A pre-norm transformer layer is
``block(residual){layernorm, attention}``, ``block(residual){layernorm,
dense gelu, dense}``."""
from __future__ import annotations

import dataclasses
import math

from .base import LAYER_TYPES, LayerType, ParamSpec, register


@register
class Block(LayerType):
    name = "block"
    options = ("layers", "residual")
    required = ("layers",)

    def validate(self, ctx, raw, where, in_shape, inp):
        from ..spec import MAX_LAYERS, _check_layer_sizes, _layer   # (spec imports layers)
        residual = raw.get("residual", False)
        if not isinstance(residual, bool):
            ctx.fail(f"{where}.residual", f"expected true or false, got {ctx.short(residual)}")
        items = raw["layers"]
        if not isinstance(items, list) or not items:
            ctx.fail(f"{where}.layers", "expected a non-empty list of layers")
        if len(items) > MAX_LAYERS:
            ctx.fail(f"{where}.layers", f"{len(items)} layers are too many (at most "
                                        f"{MAX_LAYERS})")
        inner, seen, shape = [], {}, tuple(in_shape)
        for i, item in enumerate(items):
            lay = _layer(ctx, item, i, shape, inp, parent=where)
            _check_layer_sizes(ctx, lay)
            if lay.name in seen:
                ctx.fail(f"{where}.layers[{i}].name",
                         f"duplicate layer name {lay.name!r} in this block (also "
                         f"layers[{seen[lay.name]}])")
            seen[lay.name] = i
            inner.append(lay)
            shape = lay.out_shape
        if residual and shape != tuple(in_shape):
            ctx.fail(f"{where}.residual", f"the block's output {shape} does not match its "
                                          f"input {tuple(in_shape)}, so it cannot be added")
        params = tuple(ParamSpec(f"{lay.name}.{p.name}", p.shape, p.role)
                       for lay in inner for p in lay.params)
        if sum(math.prod(p.shape) for p in params) > 10**8:
            ctx.fail(where, "its parameters are too many")
        return {"layers": tuple(inner), "residual": residual}, shape, params

    def table_entries(self, layer):
        return sum(LAYER_TYPES[lay.type].table_entries(lay) for lay in layer.layers)

    def forward(self, g, layer, x, p):
        h = x
        for lay in layer.layers:
            own = {q.name: p[f"{lay.name}.{q.name}"] for q in lay.params}
            # its variables are prefixed by the block's name (b0_l1_XW, ...)
            named = dataclasses.replace(lay, name=f"{layer.name}_{lay.name}")
            h = LAYER_TYPES[lay.type].forward(g, named, h, own)
        if not layer.residual:
            return h
        return g.map(g.sym(h) + g.sym(x), base=f"{layer.name}_R", label=f"R_{layer.name}",
                     comment=f"{layer.name}: residual: the block's input + its output")

    def describe(self, layer):
        inner = ", ".join(f"{lay.name}: {lay.type}"
                          + (f" {LAYER_TYPES[lay.type].describe(lay)}"
                             if LAYER_TYPES[lay.type].describe(lay) else "")
                          for lay in layer.layers)
        return ("residual " if layer.residual else "") + "{" + inner + "}"
