"""What a layer type is, and the facts every stage shares about parameters.

A layer type (one module in this package, registered with :func:`register`)
declares

* ``options``: the keys it accepts besides ``type`` and ``name``, and
  ``validate(ctx, raw, where, in_shape, inp)`` which checks them and returns
  ``(options, out_shape, params)``; ``params`` are :class:`ParamSpec` with a
  shape and a **role**;
* ``forward(g, layer, x, p)``: its forward composition from the primitives
  (``g.matmul``, ``g.map``, ...); nothing here is differentiated by hand;
* ``hessian``: which second-order structure applies (the contracts are
  below): ``"kronecker"``, ``"identity"`` or ``None`` (the Hessian is
  assembled from Hessian-vector products: nothing more to provide);
* ``recurrent``: True when it loops over the time steps;
* ``check_input(ctx, where, in_shape, inp)``: refuses an input the type
  cannot take before its options are checked;
* ``table_entries(layer)``: for validation, how many index-table entries
  its gather patterns put in the C source (0 for most types).

Roles drive initialisation, l2 and gradient factors everywhere (generated
module, reference, derivation), so nothing matches on parameter names.

The structured-Hessian contracts (what :func:`bpgen.derivation.structured`
networks are assembled from; :mod:`bpgen.assembly.derive`):

``hessian = "kronecker"``: one affine map then an elementwise activation,
z = a·W + 1·b, out = f(z), on a flat input.  The type must

1. declare exactly one parameter of role ``weight``, shaped (p, c), and one
   of role ``bias``, shaped (c,), the bias right after the weight in
   ``params`` (θ's flat order: the assembly treats (W, b) as one block of
   the input [a, 1]); no other parameter;
2. in ``forward``, call :meth:`LayerType.kronecker` once with the graph
   variables of its input a (N, p), its pre-activation z (N, c) and its
   output f(z), and f as a function of one SymPy symbol (whose first and
   second derivatives SymPy takes for f'(z), f''(z)).

The derivation asks :meth:`LayerType.kronecker_parts`, which checks both
and returns :class:`KroneckerParts`; a type that does not meet them fails
there with a ValueError naming the type and what is missing.

``hessian = "identity"``: no parameters, and ``forward`` returns its input
variable itself (values pass through unchanged, as ``flatten``): the
assembly skips the layer.  :meth:`LayerType.identity_check` checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import sympy as sp

from ..activations import ACTIVATIONS

__all__ = ["ParamSpec", "Role", "ROLES", "LayerType", "LAYER_TYPES", "register",
           "fans", "activation_option", "KroneckerParts", "AttentionParts",
           "HESSIAN_STRUCTURES"]

#: the values a layer type's ``hessian`` may take (see the module docstring)
HESSIAN_STRUCTURES = ("kronecker", "identity", None)


@dataclass(frozen=True)
class Role:
    """What a parameter's role implies."""
    init: str          # "glorot" (uniform, fans from the shape), "zeros" or "ones"
    l2: bool           # included in 0.5 * l2 * Σ‖W‖²
    factors: bool      # a matrix whose gradient grad_factors returns as Uᵀ·V


ROLES = {
    "weight": Role("glorot", l2=True, factors=True),
    "recurrent_weight": Role("glorot", l2=True, factors=True),
    "bias": Role("zeros", l2=False, factors=False),
    "gain": Role("ones", l2=False, factors=False),
    # an embedding table (rows looked up by token id or step): Glorot-uniform
    # like a weight, but not regularised; its gradient, a scatter-add of
    # rows, is the product onehot(index)ᵀ·δ (grad_factors: U the one-hot rows)
    "table": Role("glorot", l2=False, factors=True),
}


class ParamSpec(NamedTuple):
    """A layer's parameter: short name (``"W"``), shape, role (see ROLES)."""
    name: str
    shape: tuple
    role: str


def fans(shape: tuple) -> tuple:
    """(fan_in, fan_out) of a weight for Glorot initialisation: (in, out) for
    a matrix; (C·k·k, filters·k·k) for a conv kernel (filters, C, k, k)."""
    if len(shape) == 2:
        return (shape[0], shape[1])
    if len(shape) > 2:
        rf = math.prod(shape[2:])
        return (shape[1] * rf, shape[0] * rf)
    return (shape[0], shape[0])


def activation_option(ctx, raw: dict, where: str, default: str = "identity"):
    """The ``activation`` option and its ``alpha`` (default from ACTIVATIONS)."""
    act = ctx.choice(raw.get("activation", default), f"{where}.activation",
                     tuple(ACTIVATIONS), "activation")
    alpha = None
    if "alpha" in ACTIVATIONS[act]:
        alpha = ACTIVATIONS[act]["alpha"]
        if "alpha" in raw:
            alpha = ctx.number(raw["alpha"], f"{where}.alpha", strict=(act == "elu"))
    elif "alpha" in raw:
        ctx.fail(f"{where}.alpha", f"activation {act!r} takes no alpha "
                                   f"(only leaky_relu and elu do)")
    return act, alpha


@dataclass(frozen=True)
class KroneckerParts:
    """What the structured Hessian reads of one layer of the ``kronecker``
    structure: graph variables of its forward composition (``input`` a,
    ``pre`` z = a·W + 1·b, ``output`` f(z)), ``f`` (z -> f(z) in SymPy),
    and its parameter keys found by role (``weight``, ``bias``)."""
    layer: str
    input: str
    pre: str
    output: str
    f: Callable
    weight: str = ""
    bias: str = ""


@dataclass(frozen=True)
class AttentionParts:
    """What ``bpgen show --hessian`` reads of a self-attention layer to print
    its Hessian blocks in matrix form (:mod:`bpgen.hessian_attention`): graph
    variables of its forward composition, per sample X (T, F) -> Q, K, V ->
    the scores S = Q_j·K_jᵀ/√d per head j -> P = softmax over the keys of S -> AV (the heads
    side by side) -> output AV·Wo + 1·bo; the sizes; and the parameters'
    graph variables, ``weights`` (Wq, Wk, Wv, Wo), each (F, F), and
    ``biases`` (bq, bk, bv, bo), each (F,), in that order.  A type
    registers them with :meth:`LayerType.attention`."""
    layer: str
    input: str
    queries: str
    keys: str
    values: str
    scores: str               # Q_j·K_jᵀ/√d, before any mask
    weights: str
    heads_out: str
    output: str
    heads: int
    steps: int
    features: int
    weight_params: tuple      # (Wq, Wk, Wv, Wo)
    bias_params: tuple        # (bq, bk, bv, bo)


#: layer type name -> its (single) instance
LAYER_TYPES: dict = {}


def register(cls):
    """Class decorator: make ``cls()`` the layer type called ``cls.name``."""
    if cls.name in LAYER_TYPES:
        raise ValueError(f"layer type {cls.name!r} registered twice")
    if cls.hessian not in HESSIAN_STRUCTURES:
        raise ValueError(f"layer type {cls.name!r}: hessian must be one of "
                         f"{HESSIAN_STRUCTURES}, got {cls.hessian!r}")
    LAYER_TYPES[cls.name] = cls()
    return cls


def _by_role(layer, role: str) -> list:
    return [p for p in layer.params if p.role == role]


class LayerType:
    """Base class; see the module docstring."""
    name = ""
    options: tuple = ()
    required: tuple = ()
    recurrent = False
    hessian = None

    def check_input(self, ctx, where: str, in_shape: tuple, inp) -> None:
        """Refuse an input this type cannot take, before its options are
        checked (a pooling layer on a flat input is told so, not that it
        has no ``units``)."""

    def allowed(self, ctx, raw: dict, where: str) -> tuple:
        """The option keys ``raw`` may carry (some depend on another option)."""
        return self.options

    def validate(self, ctx, raw: dict, where: str, in_shape: tuple, inp):
        raise NotImplementedError

    def forward(self, g, layer, x: str, p: dict) -> str:
        raise NotImplementedError

    def describe(self, layer) -> str:
        """A few words for ``bpgen show`` after the type (e.g. the activation)."""
        return ""

    def table_entries(self, layer) -> int:
        """An upper bound on the entries of the static index tables (gather
        patterns) the C module holds in its source for ``layer`` (validated):
        validation bounds their sum, and with it the size of the source."""
        return 0

    # ---- the structured-Hessian contracts (module docstring) ------------------
    def kronecker(self, g, layer, inp: str, pre: str, out: str, f: Callable) -> None:
        """Called by ``forward`` of a ``kronecker`` type: register its input,
        pre-activation and output variables and its activation ``f``."""
        if layer.name in g.layer_parts:
            raise ValueError(f"layer {layer.name!r}: kronecker parts registered twice")
        g.layer_parts[layer.name] = KroneckerParts(layer.name, inp, pre, out, f)

    def kronecker_parts(self, g, layer) -> KroneckerParts:
        """The registered parts of ``layer`` in graph ``g`` with its weight
        and bias keys (by role), after checking the contract."""
        where = f"layer type {self.name!r} (layer {layer.name!r})"
        if self.hessian != "kronecker":
            raise ValueError(f"{where} does not declare hessian = 'kronecker'")
        weights, biases = _by_role(layer, "weight"), _by_role(layer, "bias")
        if len(weights) != 1 or len(biases) != 1 or len(layer.params) != 2:
            raise ValueError(f"{where} declares hessian = 'kronecker' but its parameters "
                             f"{[(p.name, p.role) for p in layer.params]} are not one "
                             f"'weight' and one 'bias'")
        (w,), (b,) = weights, biases
        if (len(w.shape) != 2 or b.shape != w.shape[1:]
                or layer.params.index(b) != layer.params.index(w) + 1):
            raise ValueError(f"{where}: the kronecker structure needs a weight (p, c) "
                             f"followed by its bias (c,), got {w.name} {w.shape}, "
                             f"{b.name} {b.shape}")
        parts = g.layer_parts.get(layer.name)
        if not isinstance(parts, KroneckerParts):
            raise ValueError(f"{where} declares hessian = 'kronecker' but its forward "
                             f"did not register its parts (call self.kronecker(g, layer, "
                             f"input, pre-activation, output, f))")
        z = sp.Symbol("z")
        if not isinstance(parts.f(z), sp.Expr):
            raise ValueError(f"{where}: the kronecker activation f must map a SymPy "
                             f"symbol to an expression")
        return KroneckerParts(parts.layer, parts.input, parts.pre, parts.output, parts.f,
                              f"{layer.name}.{w.name}", f"{layer.name}.{b.name}")

    def attention(self, g, layer, parts: AttentionParts) -> None:
        """Called by ``forward`` of a self-attention type: register the
        variables ``bpgen show --hessian`` prints its blocks with (the
        derivation does not read them: the Hessian comes from Hessian-vector
        products)."""
        if layer.name in g.layer_parts:
            raise ValueError(f"layer {layer.name!r}: parts registered twice")
        if len(parts.weight_params) != 4 or len(parts.bias_params) != 4:
            raise ValueError(f"layer {layer.name!r}: attention parts need the four "
                             f"weights (Wq, Wk, Wv, Wo) and the four biases")
        g.layer_parts[layer.name] = parts

    def identity_check(self, layer) -> None:
        """The ``identity`` contract's part that can be checked on the spec:
        no parameters."""
        if self.hessian != "identity" or layer.params:
            raise ValueError(f"layer type {self.name!r} (layer {layer.name!r}): the "
                             f"identity structure takes no parameters")
