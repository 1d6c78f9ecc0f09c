"""The structured Hessian's assembly: batched ops (one class per file, each
with its shape check, equation and printing for both backends) and
:func:`derive_assembly`, which composes them per architecture.  See
:mod:`bpgen.assembly.base`."""
from __future__ import annotations

from .base import ASSEMBLY_OPS, Assembly, AssemblyOp, Tensor, register
from .derive import derive_assembly

__all__ = ["ASSEMBLY_OPS", "Assembly", "AssemblyOp", "Tensor", "register", "derive_assembly"]
