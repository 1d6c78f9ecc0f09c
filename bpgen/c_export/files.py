"""``bpgen.export``: validate, emit, write (each file whole or not at all)."""
from __future__ import annotations

import os
import types

from .. import __version__
from ..api import check_out_dir, write_sources
from ..derivation import derive_all
from ..spec import Spec, check_source_size, load_spec
from .emit import _env, check_prefix, emit_export

__all__ = ["export"]


def _max_batch(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_batch: expected a positive integer, got {value!r}")
    if value > 2**31:
        raise ValueError(f"max_batch: at most 2**31, got {value}")
    return value


def export(spec, out_dir, *, prefix=None, functions=None, max_batch: int = 1,
           progress=None, out_name: str = "out_dir"):
    """Write ``spec``'s network as a standalone C99 library into ``out_dir``:
    ``<prefix>.h``, ``<prefix>.c``, ``Makefile``, ``CMakeLists.txt`` and
    ``example.c``
    (docs/c-export.md).  ``prefix`` (default: the architecture's name) starts
    every exported name; ``functions`` (a list or a comma-separated str) some
    of ``bpgen.c_export.FUNCTIONS`` (default: forward, loss, loss_and_grad,
    hvp); ``max_batch`` the batch size ``<prefix>_MAX_WORK_BYTES`` is for.
    Returns the :class:`bpgen.c_export.Layout` (the header's sizes; ``paths``,
    the files written).  Every mistake is a ValueError naming the argument
    (``out_name`` for ``out_dir``), raised before anything is written."""
    s = spec if isinstance(spec, Spec) else load_spec(spec)
    prefix = check_prefix(prefix, s.name)
    max_batch = _max_batch(max_batch)
    out = check_out_dir(out_dir, out_name, create=False)       # before the work
    if progress:
        progress(f"deriving {s.name} ...")
    derived = derive_all(s)
    if progress:
        progress(f"emitting {prefix}.h and {prefix}.c ...")
    files, layout = emit_export(derived, prefix, functions, max_batch)
    common = {"prefix": prefix, "version": __version__, "source": os.path.basename(s.source)}
    files["Makefile"] = _env.get_template("Makefile.j2").render(**common)
    files["CMakeLists.txt"] = _env.get_template("CMakeLists.txt.j2").render(
        **common, gemm="sgemm" if s.dtype == "float32" else "dgemm")
    files["example.c"] = _env.get_template("example.c.j2").render(
        **common, lengths_arg="lengths, " if s.input.is_sequence else "")
    check_source_size(files, s.source)
    check_out_dir(out, out_name)
    layout.paths = write_sources(types.SimpleNamespace(files=files), out)
    return layout
