"""bpgen: symbolic code generation for neural-network derivatives.

``bpgen.build(spec, backend="numpy" | "c", out_dir=None)`` validates an
architecture (a YAML path or a dict), derives its derivatives in matrix form
with SymPy, emits a NumPy or C (cffi) module and returns it imported.
"""
__version__ = "0.1.0"

from .spec import SpecError, load_spec  # noqa: E402

__all__ = ["__version__", "SpecError", "load_spec", "build", "spectrum", "export"]


def build(spec, backend="numpy", out_dir=None, progress=None):
    """Build and import the generated module for ``spec`` (path or dict).

    ``backend`` is ``"numpy"`` or ``"c"``; sources are written to ``out_dir``
    (default ``generated/``).  An invalid architecture raises
    :class:`SpecError` (a ``ValueError``) and writes nothing.  ``progress``
    (a callable taking a message) hears of each stage (derive, emit,
    compile); without it the call is silent.
    """
    from .api import build as _build
    return _build(spec, backend=backend, out_dir=out_dir, progress=progress)


def spectrum(module, params, x, y, k=6, smallest=False, full=None, tol=0.0, progress=None):
    """Eigenvalues of the exact Hessian; see :func:`bpgen.curvature.spectrum`."""
    from .curvature import spectrum as _spectrum
    return _spectrum(module, params, x, y, k=k, smallest=smallest, full=full, tol=tol,
                     progress=progress)


def export(spec, out_dir, *, prefix=None, functions=None, max_batch=1, progress=None):
    """Write ``spec``'s network as a standalone C99 library (``<prefix>.h``,
    ``<prefix>.c``, a Makefile and example.c) into ``out_dir``; returns its
    :class:`bpgen.c_export.Layout` (the header's sizes, the files written).
    See :func:`bpgen.c_export.export` and docs/c-export.md."""
    from .c_export import export as _export
    return _export(spec, out_dir, prefix=prefix, functions=functions, max_batch=max_batch,
                   progress=progress)
