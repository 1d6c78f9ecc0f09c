"""What a primitive is: one class holding all of its rules.

A primitive knows

* ``build(g, *args, ...)``: its output shape (and when no op is needed at
  all); it adds the op to the graph with ``g.emit``.  Layers call it as
  ``g.<primitive name>(...)``;
* ``vjp(g, op, gout, only)``: the reverse-mode rule, ``{arg: cotangent}``
  for the differentiable arguments wanted (``only=None``: all);
* ``jvp(g, op, tangents)``: the forward-mode rule, the tangent of the output
  (or ``None`` when it is zero), from ``{var: tangent var}``;
* ``equation(op, names, latex)``: the right-hand side in matrix notation;
* ``numpy(em, op, loop)`` and ``c(em, op, loop)``: how each backend prints it.
* ``c_batched(em, op, loop)``, ``numpy_batched(...)``: the rules for k
  tangent directions at once
  (``bpg_hessian_columns``): every tangent ("batched") variable of shape
  (r, c) is stored as (r, K, c), its k directions as extra columns.  Seen
  as (r·K, c) rows, a per-sample tangent is a batch of N·K samples (sample
  n in direction j is row n·K + j), so a rule that treats rows as samples
  (``batch_as_rows``) prints unchanged with N standing for N·K (the
  emitter binds it so); maps that broadcast a fixed value over the
  directions, and products, have rules of their own.
  ``numpy`` returns the right-hand side of ``out = ...`` as a string, or the
  whole statement as a list of lines; ``c`` returns lines.  ``em`` is the
  backend's emitter: ``em.shape``, ``em.acc`` (NumPy) / ``em.ptr`` (C) give
  where a variable lives at this point (in C a variable's own name is
  ``em.name(var)``: under a fixed prefix), ``em.use(helper)`` records a C
  runtime helper the printed code calls.

Rules are written with :class:`bpgen.ir.Graph` operations, so a derivative
is itself a program of primitives (and can be differentiated again: that is
how Hessian-vector products arise).
"""
from __future__ import annotations

__all__ = ["Primitive", "PRIMITIVES", "register", "wanted", "tangent_name", "cot_name"]

#: primitive name -> its (single) instance
PRIMITIVES: dict = {}


def register(cls):
    """Class decorator: make ``cls()`` the primitive called ``cls.name``."""
    if cls.name in PRIMITIVES:
        raise ValueError(f"primitive {cls.name!r} registered twice")
    PRIMITIVES[cls.name] = cls()
    return cls


def wanted(g, a: str, only) -> bool:
    """Is a cotangent of ``a`` wanted: differentiable, and asked for."""
    return g.vars[a].differentiable and (only is None or a in only)


def cot_name(g, a: str) -> dict:
    """Variable name and label of the cotangent of ``a``."""
    return {"base": "d_" + a, "label": "δ" + g.vars[a].label}


def tangent_name(g, op) -> tuple:
    """Variable name and label of the tangent (R-operator) of ``op``'s output."""
    return "r_" + op.out, "R{" + g.vars[op.out].label + "}"


class Primitive:
    """Base class; subclasses define the rules listed in the module docstring."""

    name = ""
    #: False: the output never carries a derivative (e.g. rowmax)
    differentiable = True
    #: True: ``c`` is right on a batch of N·K rows (see ``c_batched``)
    batch_as_rows = False
    #: False: the C backend runs a tangent part with this primitive one
    #: direction at a time although ``c_batched`` has a rule (measured
    #: slower over k directions: gather, scatter and the arg-max, whose
    #: one-direction loop nests are specialised; NumPy uses the rule)
    batched_in_c = True
    # what the passes, walkers and printers ask of a primitive (instead of
    # testing its name):
    #: an elementwise map of its arguments (``attrs["expr"]``, SymPy)
    elementwise = False
    #: its NumPy result may be a view of an argument (never overwritten then)
    is_view = False
    #: a loop's state read: the previous iteration's value of its argument
    state_read = False
    #: a matrix product (``attrs["ta"]``/``attrs["tb"]``: transposed operands)
    product = False
    #: its result is its arguments side by side (pieces may be written in place)
    places_pieces = False
    #: a reduction (sum) whose terms may carry the result's own label
    reduces = False
    #: a truncation of a sequence's gradient every k steps (``attrs["every"]``)
    truncates = False
    #: its C rule is right with its result in its first argument's storage
    #: (bpgen.passes.in_place: when nothing reads the argument afterwards)
    c_in_place = False

    def aliases(self, op) -> bool:
        """Is ``op``'s result just another name of its argument?"""
        return False

    def merge_parts(self, g, name: str, ops: list):
        """The total of the cotangent ``parts`` of ``name`` that ``ops`` (all
        of this primitive, in the current loop) produced, built without a
        sum (e.g. column blocks concatenated); None: sum them."""
        return None

    def build(self, g, *args, **kwargs) -> str:
        raise NotImplementedError(f"{self.name}: build")

    def vjp(self, g, op, gout: str, only=None) -> dict:
        raise NotImplementedError(f"{self.name}: no reverse-mode rule")

    def jvp(self, g, op, t: dict):
        raise NotImplementedError(f"{self.name}: no forward-mode rule")

    def equation(self, op, names: dict, latex: bool = False) -> str:
        raise NotImplementedError(f"{self.name}: equation")

    def numpy(self, em, op, loop):
        raise NotImplementedError(f"{self.name}: NumPy printing")

    def c(self, em, op, loop) -> list:
        raise NotImplementedError(f"{self.name}: C printing")

    def numpy_batched(self, em, op, loop):
        """The NumPy rule over k directions at once (same layout and
        NotImplementedError convention as ``c_batched``)."""
        if self.batch_as_rows and all(em.is_batched(a) for a in op.args):
            return self.numpy(em, op, loop)
        raise NotImplementedError(f"{self.name}: no NumPy rule for k directions at once")

    def c_batched(self, em, op, loop) -> list:
        """The C rule over k directions at once; NotImplementedError when
        there is none (the emitter then runs one direction at a time)."""
        if self.batch_as_rows and all(em.is_batched(a) for a in op.args):
            return self.c(em, op, loop)
        raise NotImplementedError(f"{self.name}: no C rule for k directions at once")

    def zero_when(self, op, zero: set) -> bool:
        """Is ``op``'s output zero whenever its arguments in ``zero`` are
        zero matrices?  Asked of the tangent part of ``hessian_columns``: an
        op whose tangent arguments are all zero in a chunk of directions is
        skipped there, its output zeroed (backends/c/columns.py).  False
        (never skipped) unless the primitive says."""
        return False

    def batched_rule(self, op, batched) -> bool:
        """Do ``c_batched`` and ``numpy_batched`` have a rule for ``op`` when
        the variables in ``batched`` carry k directions?  Asked once, before
        printing (bpgen.columns.split): without one, ``hessian_columns``
        runs one direction at a time."""
        return self.batch_as_rows and all(a in batched for a in op.args)


class Unary(Primitive):
    """A structural primitive with one argument that is linear in it: its
    tangent is the same primitive applied to the argument's tangent."""

    def jvp(self, g, op, t: dict):
        (a,) = op.args
        if a not in t:
            return None
        base, label = tangent_name(g, op)
        return self.apply_to(g, op, t[a], base, label)

    def apply_to(self, g, op, a: str, base: str, label: str) -> str:
        """This op's primitive, with its attributes, applied to ``a``."""
        raise NotImplementedError
