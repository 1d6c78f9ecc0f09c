"""The primitives of the IR, one module (one class) each.

Every module in this package is imported here, and each registers its class
with :func:`register`; adding a primitive is adding one file.  See
:mod:`bpgen.primitives.base` for what a primitive holds.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import PRIMITIVES, Primitive, register

__all__ = ["PRIMITIVES", "Primitive", "register"]

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base":
        importlib.import_module(f"{__name__}.{_m}")
