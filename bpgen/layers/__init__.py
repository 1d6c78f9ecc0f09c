"""Layer types, one module each; see :mod:`bpgen.layers.base`.

Every module here is imported, and each registers its class; adding a layer
type is adding one file (plus its reference implementation and tests).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import LAYER_TYPES, ROLES, LayerType, ParamSpec, fans, register

__all__ = ["LAYER_TYPES", "ROLES", "LayerType", "ParamSpec", "fans", "register",
           "RESERVED_TYPES", "RECURRENT_TYPES"]

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base":
        importlib.import_module(f"{__name__}.{_m}")

#: layer types the architecture file reserves that this version refuses
RESERVED_TYPES = ()
RECURRENT_TYPES = tuple(n for n, t in LAYER_TYPES.items() if t.recurrent)
