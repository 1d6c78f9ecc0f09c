"""Pass: contiguous copies of transposed loop-invariant product operands.

Inside a loop, a matrix product whose transposed operand does not change
from step to step reads, instead, a contiguous copy of that transpose made
once before the loop: BLAS is faster on it than on a transpose with few
rows.  The backends' rules differ (each was measured on its own):

* C (:func:`c_transposes`): only B of A·Bᵀ, B of fixed size (a recurrent
  weight: the backward step's δ·Whᵀ); one copy per B, made before the first
  loop that uses it (OpenBLAS then runs the product in column chunks on its
  small-matrix kernels rather than packing Bᵀ at every step: measured on
  the Elman 64→256 gradient, 5% faster, the 32 x 256 by 256 x 256 step
  product 93 -> 76 µs);
* NumPy (:func:`numpy_transposes`): either transposed operand, any size,
  one copy per loop that uses it.

Both return plain data; the emitters print the copies and the products."""
from __future__ import annotations

import dataclasses

from ..ir import RESERVED, Var

__all__ = ["c_transposes", "numpy_transposes", "in_loop", "Fresh"]


class Fresh:
    """Names not yet taken in a program (its variables, the emitted code's own)."""

    def __init__(self, taken):
        self.taken = set(taken) | RESERVED

    def __call__(self, base: str, sep: str = "_") -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}{sep}{k}", k + 1
        self.taken.add(name)
        return name


def in_loop(prog, a: str, loop, varying=frozenset()) -> bool:
    """Does ``a`` change from step to step of ``loop`` (``varying``: names
    that change anyway, e.g. per direction)?"""
    v = prog.vars[a]
    return a in varying or v.loop == loop or v.shape[0] == prog.loops[loop]["seq"]


def c_transposes(prog) -> dict:
    """{B: (loop, name of Bᵀ)}: the C rule (see the module docstring)."""
    fresh, out = Fresh(prog.vars), {}
    for op in prog.ops:
        if (not op.primitive.product or op.loop is None or not op.attrs["tb"]
                or op.attrs["ta"] or op.args[1] in out):
            continue
        v = prog.vars[op.args[1]]
        if v.loop is not None or not all(isinstance(d, int) for d in v.shape):
            continue
        out[v.name] = (op.loop, fresh(f"{v.name}_T", sep=""))
    return out


@dataclasses.dataclass(frozen=True)
class Transpose:
    """Before loop ``loop``: ``name`` = a contiguous copy of ``source``ᵀ."""
    loop: int
    name: str
    source: str


def numpy_transposes(prog, fresh: Fresh, varying=frozenset()) -> tuple:
    """The NumPy rule: ({op out: the product reading the copies},
    {op out: [Transpose made for it, before its loop]}, {new name: Var})."""
    made, rewritten, pre, new_vars = {}, {}, {}, {}
    for op in prog.ops:
        if not op.primitive.product or op.loop is None:
            continue
        args, attrs = list(op.args), dict(op.attrs)
        for k, flag in ((0, "ta"), (1, "tb")):
            a = args[k]
            if not attrs[flag] or in_loop(prog, a, op.loop, varying):
                continue
            key = (op.loop, a)
            if key not in made:
                name = fresh(a + "_T")
                r, c = prog.vars[a].shape
                new_vars[name] = Var(name, (c, r))
                pre.setdefault(op.out, []).append(Transpose(op.loop, name, a))
                made[key] = name
            args[k], attrs[flag] = made[key], False
        if tuple(args) != op.args:
            rewritten[op.out] = dataclasses.replace(op, args=tuple(args), attrs=attrs)
    return rewritten, pre, new_vars
