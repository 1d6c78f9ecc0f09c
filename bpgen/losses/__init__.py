"""The losses, one module (one class) each; see :mod:`bpgen.losses.base`
for what a loss holds.

Every module in this package is imported here, and each registers its
class with :func:`register`; adding a loss is adding one file (plus a row in
``tests/test_losses.py``).  ``LOSSES``: name -> instance, in the order of the
module names.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import CURVATURE_FORMS, LOSSES, TARGET_KINDS, Loss, register

__all__ = ["LOSSES", "Loss", "register", "CURVATURE_FORMS", "TARGET_KINDS"]

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base":
        importlib.import_module(f"{__name__}.{_m}")
