"""What a loss is: the contract every loss file (one module in this package,
registered with :func:`register`) fulfils.

A loss declares, as data:

* ``name``: its name in the architecture file (``loss: NAME``);
* ``target_kind``: what ``y`` holds.  ``"labels"``: integer class labels, of
  the output's shape without its last axis, which the generated module (its
  Python checks and its C entry points) turns into one-hot rows of the
  output's width before the generated code reads them; ``"real"``: real
  values of the output's shape, passed as they are;
* ``target_range``: ``None``, or ``(lo, hi)``: the closed interval every real
  target must lie in (checked in Python and in C, both finite floats);
* ``curvature_form``: how ``curvature`` below is read (one of
  :data:`CURVATURE_FORMS`): ``"diagonal"``, the per-sample Hessian of the
  loss w.r.t. the output is diag(c) (c = ℓ'' per unit); ``"softmax"``, it is
  diag(p) - p pᵀ (c = p, probabilities summing to 1 per row).  The
  structured Hessian's assembly (Λ_out), the exact diagonal
  (``runtime/hessian.py``) and ``bpgen spectrum`` read the form, never the
  name;
* ``rank_deficit``: the per-sample curvature of K output units has rank at
  most K - rank_deficit (1 for the softmax: its rows sum to 0);
* ``doc``: the loss for ``bpgen doc`` (Markdown, ``$...$`` LaTeX), after
  "The loss is the ";
* ``curvature_text`` / ``curvature_tex``: Λ_out for ``bpgen show --hessian``,
  with ``{n}`` for the count the mean divides by;

and provides

* ``forward(g, o, y) -> dict``: its composition from the primitives
  (``g.map``, ``g.sum``, ...; nothing differentiated by hand), from the
  scored output ``o`` and the target ``y`` (one-hot for labels), both
  (rows, K).  It returns the graph variables it made that others read:
  always ``"terms"``, the per-row (rows, 1) or per-unit (rows, K) loss terms
  whose total is the summed (not yet averaged) loss, and ``"output"``, the
  ``o`` it read; plus whatever its ``curvature`` needs;
* ``curvature(g, v) -> str``: the (rows, K) variable c the structured
  Hessian reads (see ``curvature_form``), built from ``v``, the dict
  ``forward`` returned (never found by a name).  The default, for the
  ``"diagonal"`` form, is SymPy's second derivative of the terms w.r.t. the
  output;
* ``validate(ctx, where, out_shape)``: refuse an output it cannot score (the
  common checks, a flat or per-step output, are the spec's);
* its **reference**, plain NumPy that shares nothing with the derivation:
  ``reference_value(out, y)`` (the mean over all axes but the last of the
  per-row loss, a float), ``reference_grad(out, y)`` (its gradient w.r.t.
  ``out``), with ``out`` (..., K) float64 and ``y`` int64 labels (...) or
  float64 (..., K); and ``sample_targets(rng, shape, dtype)``: random
  targets for an output of ``shape`` (tests, ``bpgen check``).

Adding a loss is adding one file here (and a row in ``tests/test_losses.py``):
nothing outside this package names a loss.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

__all__ = ["Loss", "LOSSES", "register", "CURVATURE_FORMS", "TARGET_KINDS"]

#: what a target can be (see the module docstring)
TARGET_KINDS = ("labels", "real")
#: the per-sample loss curvature forms the assembly and the runtime implement
CURVATURE_FORMS = ("diagonal", "softmax")

#: loss name -> its (single) instance
LOSSES: dict = {}


def register(cls):
    """Class decorator: make ``cls()`` the loss called ``cls.name``."""
    if cls.name in LOSSES:
        raise ValueError(f"loss {cls.name!r} registered twice")
    if cls.target_kind not in TARGET_KINDS or cls.curvature_form not in CURVATURE_FORMS:
        raise ValueError(f"loss {cls.name!r}: unknown target_kind or curvature_form")
    LOSSES[cls.name] = cls()
    return cls


def batch_count(out: np.ndarray) -> int:
    """Reference: the number of (sample, step) rows a mean runs over (all
    axes but the last)."""
    return int(np.prod(out.shape[:-1]))


class Loss:
    """Base class; see the module docstring."""
    name = ""
    target_kind = "real"
    target_range = None
    curvature_form = "diagonal"
    rank_deficit = 0
    doc = ""
    curvature_text = ""
    curvature_tex = ""

    def validate(self, ctx, where: str, out_shape: tuple) -> None:
        """Refuse an output (per-sample shape ``out_shape``) this loss cannot
        score; ``ctx.fail(where, ...)``."""

    def forward(self, g, o: str, y: str) -> dict:
        raise NotImplementedError

    def curvature(self, g, v: dict) -> str:
        """ℓ''(O) per unit: SymPy's second derivative of the terms."""
        terms = g.ops[g.producer[v["terms"]]].attrs["expr"]
        o = v["output"]
        return g.map(sp.diff(terms, g.sym(o), 2), base="loss_curv",
                     shape=g.vars[o].shape, label="ℓ''(O)")

    # ---- the reference (plain NumPy) ----

    def reference_value(self, out: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    def reference_grad(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sample_targets(self, rng, shape: tuple, dtype):
        raise NotImplementedError
