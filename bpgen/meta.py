"""What the derivation hands the runtime and the assembly besides the
programs (:attr:`bpgen.derivation.Derived.meta`): typed records, printed
into the generated module's constants by
:mod:`bpgen.backends.common.context`."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["CurvLayer", "CurvatureLayout", "Meta"]


@dataclass(frozen=True)
class CurvLayer:
    """One layer of the ``kronecker`` structure in the ``curvature``
    program: its parameter keys (found by role) and the indices among the
    program's outputs of its input a, f'(z), f''(z), q = ∂L/∂A and
    δ = ∂L/∂Z."""
    name: str
    weight_key: str
    bias_key: str
    input: int
    d1: int
    d2: int
    q: int
    delta: int

    def constant(self) -> tuple:
        """As the generated module's ``_CURV_LAYERS`` holds it."""
        return (self.weight_key, self.bias_key, self.input, self.d1, self.d2, self.q,
                self.delta)


@dataclass(frozen=True)
class CurvatureLayout:
    """The ``curvature`` program's outputs: its layers in order, and the
    index of the loss curvature (what the loss's Λ_out is made from)."""
    layers: tuple
    loss: int


@dataclass
class Meta:
    """Every entry point's metadata; a derivation returns a dict of some of
    these fields (:meth:`update` refuses any other key)."""
    #: weight key -> indices of its (U, V) among the grad_factors outputs
    factor_index: dict = field(default_factory=dict)
    #: the curvature program's layout (structured networks only)
    curvature: CurvatureLayout | None = None

    def update(self, extra: dict) -> None:
        known = {f.name for f in fields(self)}
        for key, value in extra.items():
            if key not in known:
                raise AssertionError(f"metadata {key!r} is not a field of Meta")
            setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in {f.name for f in fields(self)}

    def __getitem__(self, key: str):
        """Dict-style read of a field (``meta["factor_index"]``)."""
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)
