"""Stage 4: the derived programs -> source files, by backend.

This module only dispatches: :func:`bpgen.derivation.derive_all` derives
every entry point once, and the backend's emitter (``bpgen/backends/<name>/``)
prints them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .backends.c.module import emit as _emit_c
from .backends.numpy.module import emit as _emit_numpy
from .derivation import derive_all
from .spec import Spec

__all__ = ["Generated", "generate", "generate_all", "module_names"]


@dataclass
class Generated:
    """Generated sources: file name -> text, plus what the C build needs."""
    files: dict
    module: str               # the importable module's file stem
    c_source: str | None = None
    cdef: str | None = None
    ext_name: str | None = None


def module_names(spec: Spec, backend: str) -> str:
    return f"{spec.name}_{'numpy' if backend == 'numpy' else 'c'}"


def generate(spec: Spec, backend: str) -> Generated:
    """All generated files for ``spec`` and ``backend`` ("numpy" or "c")."""
    return generate_all(spec, (backend,))[0]


def generate_all(spec: Spec, backends, progress=None) -> list:
    """The files of every backend in ``backends``, from one derivation."""
    for backend in backends:
        if backend not in ("numpy", "c"):
            raise ValueError(f"backend: expected 'numpy' or 'c', got {backend!r}")
    if progress:
        progress(f"deriving {spec.name} ...")
    derived = derive_all(spec)
    out = []
    for backend in backends:
        module = module_names(spec, backend)
        if progress:
            progress(f"emitting {module} ...")
        if backend == "numpy":
            out.append(Generated(_emit_numpy(derived, module), module))
        else:
            files, c_source, cdef, ext_name = _emit_c(derived, module)
            out.append(Generated(files, module, c_source=c_source, cdef=cdef,
                                 ext_name=ext_name))
    return out
