"""Activation functions, each declared once as a SymPy scalar expression.

Derivatives are never written here: :func:`sympy.diff` produces them when the
chain rule reaches an activation.  Two functions are SymPy ``Function``
subclasses so that their values can be printed in numerically stable form
(``sigmoid`` and ``softplus``) while their derivatives stay symbolic:
``sigmoid' = sigmoid (1 - sigmoid)`` and ``softplus' = sigmoid``.  That is
what lets the derivation rewrite ``tanh'`` and ``sigmoid'`` in terms of the
stored activation (``1 - a**2``, ``a (1 - a)``).

At a kink (relu, leaky_relu at 0) the ``Piecewise`` condition ``z >= 0``
gives the right-hand derivative, and the second derivative is 0 there.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["ACTIVATIONS", "sigmoid", "softplus", "activation_expr"]

#: activation -> its options with their defaults (the one place they are set)
ACTIVATIONS: dict[str, dict[str, float]] = {
    "identity": {}, "sigmoid": {}, "tanh": {}, "relu": {},
    "leaky_relu": {"alpha": 0.01}, "elu": {"alpha": 1.0},
    "softplus": {}, "silu": {}, "gelu": {},
}


class sigmoid(sp.Function):
    """Logistic function 1 / (1 + exp(-z)); printed in a stable form."""
    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))


class softplus(sp.Function):
    """log(1 + exp(z)); printed in a stable form."""
    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, z, **kwargs):
        return sp.log(1 + sp.exp(z))


def activation_expr(name: str, z: sp.Expr, alpha: float | None = None) -> sp.Expr:
    """The activation ``name`` applied to the scalar expression ``z``."""
    if alpha is not None:
        alpha = sp.Float(alpha, 17)
    table = {
        "identity": lambda: z,
        "sigmoid": lambda: sigmoid(z),
        "tanh": lambda: sp.tanh(z),
        "relu": lambda: sp.Piecewise((z, z >= 0), (0, True)),
        "leaky_relu": lambda: sp.Piecewise((z, z >= 0), (alpha * z, True)),
        "elu": lambda: sp.Piecewise((z, z >= 0), (alpha * (sp.exp(z) - 1), True)),
        "softplus": lambda: softplus(z),
        "silu": lambda: z * sigmoid(z),
        "gelu": lambda: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
    }
    try:
        return table[name]()
    except KeyError:
        raise ValueError(f"activation: unknown activation {name!r}") from None
