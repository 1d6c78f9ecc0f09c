"""Input kinds, one module each; see :mod:`bpgen.inputs.base`.

``features``, ``sequence`` and ``image`` are registered first, in this
order (the order messages list the forms in), then every other module here
in name order: adding an input kind is adding one file.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import INPUT_KINDS, InputKind, register

__all__ = ["INPUT_KINDS", "InputKind", "register", "kind_for", "allowed_keys",
           "allowed_text", "forms_text"]

_FIRST = ("features", "sequence", "image")
for _m in _FIRST + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                if m.name not in _FIRST + ("base",))):
    importlib.import_module(f"{__name__}.{_m}")


def kind_for(keys: set):
    """The input kind whose keys ``keys`` are, or None."""
    return next((cls for cls in INPUT_KINDS.values() if cls.matches(keys)), None)


def allowed_keys() -> tuple:
    """Every key some input kind takes."""
    out: list = []
    for cls in INPUT_KINDS.values():
        out += [k for k in cls.keys if k not in out]
    return tuple(out)


def allowed_text() -> str:
    """The keys, grouped by kind, for messages ("features, steps; or channels,
    height, width"): a kind whose keys another's include is not repeated."""
    groups = [cls.keys for cls in INPUT_KINDS.values()]
    groups = [g for g in groups if not any(set(g) < set(o) for o in groups)]
    return "; or ".join(", ".join(g) for g in dict.fromkeys(groups))


def forms_text() -> str:
    """How the file writes each kind, for messages ("A, B or C")."""
    forms = [cls.form for cls in INPUT_KINDS.values()]
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"
