"""``flatten``: (N, C, H, W) -> (N, C·H·W) in C order.

Structure ``identity`` (see :mod:`bpgen.layers.base`): no parameters, and the
forward returns its input variable itself, so the structured Hessian skips it."""
from __future__ import annotations

import math

from .base import LayerType, register


@register
class Flatten(LayerType):
    name = "flatten"
    hessian = "identity"

    def validate(self, ctx, raw, where, in_shape, inp):
        return {}, (math.prod(in_shape),), ()

    def forward(self, g, layer, x, p):
        # activations are stored as (N, C*H*W) row-major matrices already
        return x
