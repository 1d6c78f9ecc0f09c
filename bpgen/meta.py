"""What the derivation hands the runtime and the assembly besides the
programs (:attr:`bpgen.derivation.Derived.meta`): typed records, printed
into the generated module's constants by
:mod:`bpgen.backends.common.context`."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .shapes import code

#: with steps: any, the per-sample norm's two forms cost polynomials in T:
#: they are compared at this T (the form only changes the speed, never the
#: result)
NOMINAL_STEPS = 32

__all__ = ["CurvLayer", "CurvatureLayout", "GradTerm", "ParamTerms", "Meta"]


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


@dataclass(frozen=True)
class GradTerm:
    """One summand of a parameter's data gradient before its reduction over
    rows (the ``grad_terms`` program's outputs; rows are samples, steps or
    output pixels, ``rows`` of them per sample):

    * ``product``: Uᵀ·V, U = output ``u`` (-1: the input x), V = output ``v``;
    * ``colsum``: 1ᵀ·D, D = output ``v`` (biases, gains);
    * ``scatter``: onehot(X)ᵀ·D, X = output ``u`` (-1: x, the token ids),
      D = output ``v``, ``size`` rows in the table (an embedding table);
    * ``steps``: each step's rows summed over the samples, D = output ``v``,
      ``size`` steps (a position table).

    ``layout``: how row i maps to its sample: ``time`` (i = t·N + n, a
    sequence's steps) or ``sample`` (i = n·rows + p, an image's pixels)."""
    kind: str
    u: int
    v: int
    rows: int
    layout: str
    size: int = 0

    def constant(self) -> tuple:
        # steps: any: a sequence's rows per sample are T, read from x at call
        # time (the runtime puts the count in for the string "T")
        rows = self.rows if isinstance(self.rows, int) else code(self.rows)
        return (self.kind, self.u, self.v, rows, self.layout, self.size)


@dataclass(frozen=True)
class ParamTerms:
    """A parameter's data gradient as :class:`GradTerm` summands (the l2
    term excluded), its (rows, cols) matrix shape, and how its per-sample
    norm is computed: ``gram`` (⟨U_n U_nᵀ, V_n V_nᵀ⟩ from two r×r Gram
    matrices per sample, cost ``gram_cost``) or ``explicit`` (the
    per-sample gradient formed, cost ``explicit_cost``), whichever costs
    fewer multiply-adds per sample."""
    key: str
    shape: tuple
    terms: tuple
    norm: str
    gram_cost: int
    explicit_cost: int
    #: why the parameter has no per-sample form ("unsupported" norm): a
    #: gradient summand that is not a reduction over per-sample rows
    missing: str = ""

    def constant(self) -> tuple:
        if self.norm == "unsupported":
            return (self.norm, self.shape, self.missing)
        return (self.norm, self.shape, tuple(t.constant() for t in self.terms))

    def reason(self) -> str:
        """The choice in words, for the generated comments and bpgen show."""
        if self.norm == "unsupported":
            return "unsupported: the per-sample functions raise NotImplementedError"
        r = code(sum(t.rows for t in self.terms), bare=True)
        kinds = "+".join(sorted({t.kind for t in self.terms}))
        at = f" at T = {NOMINAL_STEPS}" if r == "T" else ""
        if self.gram_cost < 0:
            return f"{self.norm} ({kinds}, r = {r}: {self.explicit_cost:,} per sample{at})"
        return (f"{self.norm} ({kinds}, r = {r} rows per sample: Gram {self.gram_cost:,} vs "
                f"explicit {self.explicit_cost:,} multiply-adds per sample{at}; a Gram matrix "
                f"another parameter forms counts 0)" if r != "1" else
                f"{self.norm} ({kinds}, r = 1 row per sample: Gram {self.gram_cost:,} vs "
                f"explicit {self.explicit_cost:,} multiply-adds per sample)")


@dataclass
class Meta:
    """Every entry point's metadata; a derivation returns a dict of some of
    these fields (:meth:`update` refuses any other key)."""
    #: weight key -> indices of its (U, V) among the grad_factors outputs
    factor_index: dict = field(default_factory=dict)
    #: the curvature program's layout (structured networks only)
    curvature: CurvatureLayout | None = None
    #: the grad_terms program: its outputs' index of the loss, and every
    #: parameter's gradient terms (:class:`ParamTerms`), in PARAM_SHAPES order
    grad_terms: tuple = ()

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
