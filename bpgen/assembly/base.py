"""What an assembly op is, and the plain data an assembly program is made of.

The structured Hessian of a network of dense layers is not differentiated
op by op: it is *assembled* from per-sample quantities the derived
``curvature`` program computes (layer inputs, f'(z), f''(z), δa, δz and the
loss curvature).  An :class:`Assembly` is that assembly as a list of
batched ops over named tensors, derived per architecture by
:func:`bpgen.assembly.derive.derive_assembly`; every op class (one file
each) holds its shape rules, its equation (one :mod:`bpgen.mathtext` node,
printed as text and LaTeX) and its printing
in both backends, like a primitive of the IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..mathtext import At, Sym

__all__ = ["Tensor", "Assembly", "AssemblyOp", "ASSEMBLY_OPS", "register"]

#: every assembly op class by name (filled by :func:`register`)
ASSEMBLY_OPS: dict = {}


def register(cls):
    """Class decorator: make an op class known by its ``name``."""
    if cls.name in ASSEMBLY_OPS:
        raise ValueError(f"assembly op {cls.name!r} registered twice")
    ASSEMBLY_OPS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Tensor:
    """A named array of the assembly: ``shape`` has "N" (the batch size) as
    its first dimension for per-sample tensors; ``text`` / ``tex`` name it in
    equations."""
    name: str
    shape: tuple
    text: str
    tex: str
    kind: str = "temp"          # "input" (curvature output), "param", "temp", "output"

    @property
    def sym(self) -> Sym:
        """The tensor in an equation."""
        return Sym(self.text, self.tex)

    def at(self, *index) -> At:
        """The tensor indexed: ``at("n")`` is sample n, ``x[n]``."""
        return At(self.sym, *index)


@dataclass
class Assembly:
    """One assembly program: inputs (the curvature program's and the
    parameters), tensors, ops in order, and its outputs (name, rows, cols):
    consecutive blocks of one flat buffer."""
    name: str
    inputs: list                 # signature order: x, y, parameters (as the curvature's)
    curvature_outputs: list      # the curvature program's outputs, in order
    tensors: dict                # name -> Tensor
    ops: list                    # AssemblyOp instances
    outputs: list                # [(name, rows, cols)]
    doc: str = ""
    notes: dict = field(default_factory=dict)
    #: how :meth:`t` names tensors in the ops' text equations: by their code
    #: variable (the generated comments name only variables of the function)
    #: or, in :meth:`with_labels`'s copy, by their labels (``bpgen show``)
    labels: bool = False

    def t(self, name: str) -> Tensor:
        tensor = self.tensors[name]
        return tensor if self.labels else replace(tensor, text=name)

    def with_labels(self) -> "Assembly":
        """This assembly with its equations in the notation's labels."""
        return replace(self, labels=True)


class AssemblyOp:
    """One batched step of an assembly.  Subclasses set ``name`` and
    implement ``reads``/``writes`` (tensor names), ``equation(asm)`` -> a
    :class:`bpgen.mathtext.Node` (printed by ``.text()`` and ``.tex()``),
    ``numpy(asm)`` and ``c(asm, em)`` -> lines of code.
    ``em.use(helper)`` records a C runtime helper the printed code calls."""
    name = ""

    def reads(self) -> tuple:
        raise NotImplementedError

    def writes(self) -> tuple:
        raise NotImplementedError

    def scratch(self) -> tuple:
        """Temporaries the op uses only while it runs (C)."""
        return ()

    def equation(self, asm: Assembly):
        raise NotImplementedError

    def numpy(self, asm: Assembly) -> list:
        raise NotImplementedError

    def c(self, asm: Assembly, em) -> list:
        raise NotImplementedError

    def check(self, asm: Assembly) -> None:
        """Raise AssertionError when the shapes of the tensors do not fit."""
