"""``bpgen export``: a network as a standalone C99 library (``NAME.h``,
``NAME.c``, a ``Makefile`` and ``example.c``) for programs without Python:
prefixed symbols, no allocation (the caller passes the workspace, sized by
the header's macros), no state, no I/O; docs/c-export.md."""
from __future__ import annotations

from .emit import DEFAULT_FUNCTIONS, FUNCTIONS, Layout, check_prefix
from .files import export

__all__ = ["export", "Layout", "FUNCTIONS", "DEFAULT_FUNCTIONS", "check_prefix"]
