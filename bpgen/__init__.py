"""bpgen: symbolic code generation for neural-network derivatives.

``bpgen.build(spec, backend="numpy" | "c", out_dir=None)`` validates an
architecture (a YAML path or a dict), derives its derivatives in matrix form
with SymPy, emits a NumPy or C (cffi) module and returns it imported.
"""
__version__ = "0.1.0"

from .spec import SpecError, load_spec  # noqa: E402

__all__ = ["__version__", "SpecError", "load_spec", "build"]


def build(spec, backend="numpy", out_dir=None):
    """Build and import the generated module for ``spec`` (path or dict).

    ``backend`` is ``"numpy"`` or ``"c"``; sources are written to ``out_dir``
    (default ``generated/``).  An invalid architecture raises
    :class:`SpecError` (a ``ValueError``) and writes nothing.
    """
    from .api import build as _build
    return _build(spec, backend=backend, out_dir=out_dir)
