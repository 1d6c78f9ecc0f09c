"""What an input kind is: everything bpgen knows about ``x``, in one object.

The architecture file's ``input:`` mapping becomes one instance of an input
kind (``spec.input``), a frozen dataclass: plain data, hashable, compared by
value.  An input kind (one module in this package, registered with
:func:`register`) declares

* ``kind``: its name (``"features"``), written into the canonical form;
* ``keys`` and ``form``: the keys of ``input:`` it takes (all of them
  required) and how the file writes it, for messages (``"{features: F}"``);
  ``parse(ctx, raw)`` checks their values (``ctx`` is the spec's validation
  context: ``ctx.pos_int``, ``ctx.steps``, ``ctx.fail``) and returns the
  instance; the per-sample size limit is checked by the spec afterwards;
  ``check_layer(ctx, where, index, ltype)`` may refuse a layer type that
  cannot read this input (token ids need an embedding first);
* ``shape``: one sample's shape, as x has it after the batch axis;
* ``steps``: T when x is a sequence of T steps (None otherwise; with
  ``steps: any``, parsed by :func:`steps_value`, the symbol T of
  :mod:`bpgen.shapes`, read from x at call time), and so
  ``is_sequence``: a layer that maps each step (dense, layernorm) or loops
  over the steps (the recurrent ones) asks this, never the kind's name;
* ``matrix_shape()``: x as the matrix the generated code reads: ``("N", F)``
  or, for a sequence, time-major ``("T*N", F)`` (rows t*N .. t*N+N-1 are
  step t); :meth:`graph_input` makes that variable of the forward graph, and
  :meth:`batch_expr` is how generated NumPy code reads N back from it;
* ``x_dtype`` and ``bound``: x's elements.  ``x_dtype`` None means real
  values of the module's dtype (any array that casts safely is converted;
  NaN and inf are refused); otherwise a NumPy integer dtype name
  (``"int64"``): any integer array is converted, floats are refused, and
  every value must lie in [0, ``bound``).  From these alone follow the
  element type of x in every C signature (:attr:`c_type`: ``real``, or
  ``int64_t``), the bytes of x per sample (:meth:`x_bytes`: the batch-size
  limit), the generated module's ``_X_DTYPE`` / ``_X_BOUND`` (read by
  the static ``_check_x``) and the C entry point's macros (``bpgf_x_t``,
  ``BPGF_X_TYPENUM``, ``BPGF_X_BOUND``: fastcall.py), so that a new kind
  changes no emitter and no runtime file;
* ``canonical()``: its part of the content hash (keep it stable: existing
  hashes name cached and saved code);
* ``describe()`` (``bpgen show``), ``doc_text()`` (``bpgen doc``, Markdown
  with ``$...$`` math) and ``sample(rng, n, dtype)``: random x for tests and
  the reference's ``random_batch``.

Adding an input kind is one file here (plus, usually, the layer that reads
it first, and tests); see the README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..shapes import TSYM, at_steps, code, json_shape

__all__ = ["InputKind", "INPUT_KINDS", "register", "steps_value"]

#: input kind name -> its class, in registration order (the order messages list them)
INPUT_KINDS: dict = {}


def register(cls):
    """Class decorator: make ``cls`` the input kind called ``cls.kind``."""
    if cls.kind in INPUT_KINDS:
        raise ValueError(f"input kind {cls.kind!r} registered twice")
    INPUT_KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class InputKind:
    """Base class; see the module docstring."""
    shape: tuple                        # one sample's shape: x is (N,) + shape

    kind: ClassVar[str] = ""
    keys: ClassVar[tuple] = ()
    form: ClassVar[str] = ""
    x_dtype: ClassVar[str | None] = None

    # ---- the architecture file -------------------------------------------

    @classmethod
    def matches(cls, keys: set) -> bool:
        """Whether an ``input:`` mapping with these keys is of this kind."""
        return keys == set(cls.keys)

    @classmethod
    def parse(cls, ctx, raw: dict) -> "InputKind":
        """The instance for ``raw`` (whose keys :meth:`matches`)."""
        raise NotImplementedError

    def check_layer(self, ctx, where: str, index: int | None, ltype) -> None:
        """Refuse a layer type (``ltype``, a :class:`bpgen.layers.LayerType`,
        at ``layers[index]``; index None: inside a block) that cannot read this input, before its options
        are checked: e.g. token ids must meet an embedding first.  Nothing by
        default (each layer type checks the shape it gets itself)."""

    def canonical(self) -> dict:
        """Its part of the architecture's canonical form (content hash)."""
        return {"kind": self.kind, "shape": json_shape(self.shape)}

    # ---- facts every stage asks ------------------------------------------

    @property
    def size(self) -> int:
        """Values per sample."""
        return math.prod(self.shape)

    @property
    def steps(self) -> int | None:
        """T for a sequence of T steps, else None."""
        return None

    @property
    def is_sequence(self) -> bool:
        return self.steps is not None

    @property
    def bound(self) -> int | None:
        """Integer x: every value lies in [0, bound).  None for real x."""
        return None

    @property
    def c_type(self) -> str:
        """x's element type in the C signatures: ``real`` or a fixed-width integer."""
        return "real" if self.x_dtype is None else f"{self.x_dtype}_t"

    def x_bytes(self, dtype: str) -> int:
        """Bytes of one sample's x as the generated code reads it (in a module of ``dtype``)."""
        return np.dtype(dtype if self.x_dtype is None else self.x_dtype).itemsize * self.size

    def matrix_shape(self) -> tuple:
        """x as the generated code reads it: one row per sample, or time-major."""
        return ("N", self.size)

    def graph_input(self, g) -> str:
        """The forward graph's input variable ``x`` (``g`` a :class:`bpgen.ir.Graph`)."""
        return g.var("x", self.matrix_shape(), "input", "X")

    def mask_inputs(self, g, truncate: int | None) -> tuple:
        """The per-(sample, step) masks of a call with ``lengths`` (a sequence
        input only), as inputs of the forward graph ``g``: ``mask`` (T*N, 1),
        1 at the steps before a sample's length and 0 at its padding, and with
        truncated BPTT ``cut_mask`` (T*N, 1), 0 at the steps where a reversed
        loop's carried cotangent is cut for that sample.  Sets ``g.mask`` and
        ``g.cut_mask``; returns the inputs in the generated functions' order
        (after x).  The runtime makes both from ``lengths``
        (``_masks`` in backends/common/runtime/api.py)."""
        if not self.is_sequence:
            return ()
        rows = self.matrix_shape()[0]
        g.mask = g.var("mask", (rows, 1), "input", "M")
        if truncate:
            g.cut_mask = g.var("cut_mask", (rows, 1), "input", "M_cut")
            return (g.mask, g.cut_mask)
        return (g.mask,)

    def batch_expr(self, var: str = "x") -> str:
        """Python: the batch size N from the matrix ``var`` (generated NumPy code)."""
        return f"{var}.shape[0]" if self.steps is None else f"{var}.shape[0] // {code(self.steps)}"

    # ---- words and sample data -------------------------------------------

    def describe(self) -> str:
        """For ``bpgen show``'s first line."""
        return f"{self.kind} input {self.shape}"

    def doc_text(self) -> str:
        """For ``bpgen doc``: what x is and how the matrix X holds it."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int, dtype, steps: int = 5) -> np.ndarray:
        """Random x of n samples: standard-normal values of ``dtype`` (T =
        ``steps`` with steps: any: only a kind that can be a steps: any
        sequence is handed ``steps``)."""
        return rng.standard_normal((n,) + self.concrete_shape(steps)).astype(dtype)

    def concrete_shape(self, steps: int = 5) -> tuple:
        """One sample's shape, T = ``steps`` for ``steps: any``."""
        return tuple(at_steps(d, steps) for d in self.shape)


def steps_value(ctx, raw):
    """``steps``: a positive integer T, or ``any`` (T read from x at call
    time: the symbol T, bpgen.shapes.TSYM)."""
    if isinstance(raw, str):
        if raw == "any":
            return TSYM
        ctx.fail("input.steps", f"expected a positive integer or any (T read from x at "
                                f"call time), got {ctx.short(raw)}")
    return ctx.steps(raw, "input.steps")
