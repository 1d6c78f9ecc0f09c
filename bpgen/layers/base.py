"""What a layer type is, and the facts every stage shares about parameters.

A layer type (one module in this package, registered with :func:`register`)
declares

* ``options``: the keys it accepts besides ``type`` and ``name``, and
  ``validate(ctx, raw, where, in_shape, inp)`` which checks them and returns
  ``(options, out_shape, params)``; ``params`` are :class:`ParamSpec` with a
  shape and a **role**;
* ``forward(g, layer, x, p)``: its forward composition from the primitives
  (``g.matmul``, ``g.map``, ...); nothing here is differentiated by hand;
* ``hessian``: which second-order structure applies: ``"kronecker"`` (an
  affine map then an elementwise activation: the Kronecker-block assembly),
  ``"identity"`` (no parameters, values pass through unchanged) or ``None``
  (the Hessian is assembled from Hessian-vector products);
* ``recurrent``: True when it loops over the time steps;
* ``check_input(ctx, where, in_shape, inp)``: refuses an input the type
  cannot take before its options are checked;
* ``table_entries(layer)``: for validation, how many index-table entries
  its gather patterns put in the C source (0 for most types).

Roles drive initialisation, l2 and gradient factors everywhere (generated
module, reference, derivation), so nothing matches on parameter names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..activations import ACTIVATIONS

__all__ = ["ParamSpec", "Role", "ROLES", "LayerType", "LAYER_TYPES", "register",
           "fans", "activation_option"]


@dataclass(frozen=True)
class Role:
    """What a parameter's role implies."""
    init: str          # "glorot" (uniform, fans from the shape), "zeros" or "ones"
    l2: bool           # included in 0.5 * l2 * Σ‖W‖²
    factors: bool      # a matrix whose gradient grad_factors returns as Uᵀ·V


ROLES = {
    "weight": Role("glorot", l2=True, factors=True),
    "recurrent_weight": Role("glorot", l2=True, factors=True),
    "bias": Role("zeros", l2=False, factors=False),
    "gain": Role("ones", l2=False, factors=False),
}


class ParamSpec(NamedTuple):
    """A layer's parameter: short name (``"W"``), shape, role (see ROLES)."""
    name: str
    shape: tuple
    role: str


def fans(shape: tuple) -> tuple:
    """(fan_in, fan_out) of a weight for Glorot initialisation: (in, out) for
    a matrix; (C·k·k, filters·k·k) for a conv kernel (filters, C, k, k)."""
    if len(shape) == 2:
        return (shape[0], shape[1])
    if len(shape) > 2:
        rf = math.prod(shape[2:])
        return (shape[1] * rf, shape[0] * rf)
    return (shape[0], shape[0])


def activation_option(ctx, raw: dict, where: str, default: str = "identity"):
    """The ``activation`` option and its ``alpha`` (default from ACTIVATIONS)."""
    act = ctx.choice(raw.get("activation", default), f"{where}.activation",
                     tuple(ACTIVATIONS), "activation")
    alpha = None
    if "alpha" in ACTIVATIONS[act]:
        alpha = ACTIVATIONS[act]["alpha"]
        if "alpha" in raw:
            alpha = ctx.number(raw["alpha"], f"{where}.alpha", strict=(act == "elu"))
    elif "alpha" in raw:
        ctx.fail(f"{where}.alpha", f"activation {act!r} takes no alpha "
                                   f"(only leaky_relu and elu do)")
    return act, alpha


#: layer type name -> its (single) instance
LAYER_TYPES: dict = {}


def register(cls):
    """Class decorator: make ``cls()`` the layer type called ``cls.name``."""
    if cls.name in LAYER_TYPES:
        raise ValueError(f"layer type {cls.name!r} registered twice")
    LAYER_TYPES[cls.name] = cls()
    return cls


class LayerType:
    """Base class; see the module docstring."""
    name = ""
    options: tuple = ()
    required: tuple = ()
    recurrent = False
    hessian = None

    def check_input(self, ctx, where: str, in_shape: tuple, inp) -> None:
        """Refuse an input this type cannot take, before its options are
        checked (a pooling layer on a flat input is told so, not that it
        has no ``units``)."""

    def allowed(self, ctx, raw: dict, where: str) -> tuple:
        """The option keys ``raw`` may carry (some depend on another option)."""
        return self.options

    def validate(self, ctx, raw: dict, where: str, in_shape: tuple, inp):
        raise NotImplementedError

    def forward(self, g, layer, x: str, p: dict) -> str:
        raise NotImplementedError

    def describe(self, layer) -> str:
        """A few words for ``bpgen show`` after the type (e.g. the activation)."""
        return ""

    def table_entries(self, layer) -> int:
        """An upper bound on the entries of the static index tables (gather
        patterns) the C module holds in its source for ``layer`` (validated):
        validation bounds their sum, and with it the size of the source."""
        return 0
