"""What both emitters share: where a variable lives inside a loop, the
commented blocks (``Grad of: ...``) a function is printed in, the runtime
files copied into generated modules, and the Jinja environment.

Emitters only print: every op is printed by its primitive
(:mod:`bpgen.primitives`), which the emitter dispatches to by name.
"""
from __future__ import annotations

import os

import jinja2

from ...ir import Op
from ...lower import Program
from ...shapes import code, size_coeffs, symbolic

__all__ = ["Emitter", "Directions", "environment", "runtime_source", "common_runtime",
           "c_size", "offset_code", "has_steps", "RUNTIME_MARKER"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: runtime files hold, above this line, what makes them importable on their
#: own (for tests and linting); only what follows it is copied
RUNTIME_MARKER = "# ---- bpgen runtime: copied verbatim from here ----\n"


def environment(backend_dir: str) -> jinja2.Environment:
    """Strict, logic-free templates: the backend's own, then the common ones."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([os.path.join(backend_dir, "templates"),
                                        os.path.join(_HERE, "templates")]),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)


def runtime_source(path: str) -> str:
    """The part of a runtime file that is copied into generated modules."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".py"):
        if RUNTIME_MARKER not in text:
            raise AssertionError(f"{path}: no runtime marker")
        text = text.split(RUNTIME_MARKER, 1)[1]
    return text.strip("\n")


def common_runtime(name: str) -> str:
    return runtime_source(os.path.join(_HERE, "runtime", name))


def c_size(shape) -> str:
    """Number of elements as C: 12, N, 3*N or 3*N + 2."""
    a, b = size_coeffs(shape)
    if symbolic(a) or symbolic(b):
        return offset_code(a, b)
    if a and b:
        return f"{a}*N + {b}"
    if a:
        return "N" if a == 1 else f"{a}*N"
    return str(b)


def has_steps(prog: Program) -> bool:
    """True for a program of a steps: any sequence (x has T*N rows): its
    functions take T after N (C) or after x (NumPy)."""
    x = prog.vars.get("x")
    return x is not None and "T" in str(x.shape[0])


def offset_code(a: int, b: int) -> str:
    """An offset a*N + b as code ("0" when both are zero; a and b may be
    polynomials in T)."""
    return " + ".join(p for p in ([f"{code(a)}*N" if a != 0 else ""]
                                  + [code(b) if b != 0 else ""]) if p) or "0"


class Emitter:
    """Prints one program; subclasses add the language (``comment``,
    ``statement``, ``loop``) and the storage of variables."""

    #: {i: op indices}: runs of ops printed as one loop by :meth:`fused`
    #: (bpgen.passes.fuse_loops; the C emitter's, none by default)
    runs: dict = {}

    def __init__(self, prog: Program, dtype: str):
        self.prog, self.dtype = prog, dtype
        self.defined = set(prog.inputs) | {op.out for op in prog.ops}

    def shape(self, name: str, loop) -> tuple:
        """Shape as seen at this point: one step of a sequence inside a loop."""
        shape = self.prog.vars[name].shape
        if loop is not None and shape[0] == self.prog.loops[loop]["seq"]:
            return ("N", shape[1])
        return shape

    def stepped(self, name: str, loop) -> bool:
        """True if ``name`` is stored for every step and indexed by t here."""
        return (loop is not None and name not in self.prog.step_vars
                and self.prog.vars[name].shape[0] == self.prog.loops[loop]["seq"])

    def fused(self, ops: list) -> list:
        """``ops`` (a run of :attr:`runs`) printed as one loop."""
        raise NotImplementedError(f"{type(self).__name__}: no fused loops")

    def op(self, op: Op, loop) -> list:
        lines = []
        if op.comment and op.grad_of is None:
            lines.append(self.comment(op.comment))
        return lines + self.statement(op, op.primitive, loop)

    # ---- the "Grad of" heads ------------------------------------------------
    def grad_of(self, key: str) -> str:
        """``Grad of: <forward statement>`` naming only variables of this
        function: maps fused away are inlined, and what is still missing is
        said to be missing."""
        fop = self.prog.forward_ops[key]
        lowered = next((o for o in self.prog.ops if o.out == key), None)
        op = lowered if lowered is not None else fop
        if op.primitive.elementwise:
            expr = self._inline(op.attrs["expr"])
            args = tuple(sorted(s.name for s in expr.free_symbols
                                if s.name in self.prog.forward_ops or s.name in self.defined))
            op = Op("map", op.out, args, {"expr": expr})
        text = f"Grad of: {op.out} = {op.primitive.equation(op, {})}"
        missing = [n for n in (op.out,) + tuple(op.args) if n not in self.defined]
        if missing:
            text += f"  (not stored in this function: {', '.join(dict.fromkeys(missing))})"
        return text

    def _inline(self, expr):
        """Substitute maps that this function does not store by their formula."""
        for _ in range(20):
            repl = {}
            for s in expr.free_symbols:
                src = self.prog.forward_ops.get(s.name)
                if s.name not in self.defined and src is not None and src.primitive.elementwise:
                    repl[s] = src.attrs["expr"]
            if not repl:
                return expr
            expr = expr.xreplace(repl)
        return expr

    def head(self, key, first: bool, backward: bool = True) -> list:
        if key is None:
            if not backward:
                return ["forward pass"] if first else ["forward pass (continued)"]
            return ["total gradients"]
        fop = self.prog.forward_ops[key]
        head = [self.grad_of(key)]
        if fop.comment:
            head.append(f"  ({fop.comment})")
        return head

    def blocks(self) -> list:
        """Ops grouped into commented blocks: the forward pass, then one block
        per forward op that the backward pass differentiates.  A loop is one
        block whose lines hold the loop and, indented, its own blocks."""
        prog = self.prog
        blocks, current_key = [], object()
        ops, i = prog.ops, 0
        while i < len(ops):
            op = ops[i]
            backward = any(o.grad_of is not None for o in ops[:i + 1])
            if op.loop is None:
                if op.grad_of != current_key:
                    blocks.append({"head": self.head(op.grad_of, not blocks, backward),
                                   "lines": []})
                    current_key = op.grad_of
                run = self.runs.get(i)
                if run is not None:         # one loop, in one "Grad of" block
                    blocks[-1]["lines"].extend(self.fused([ops[m] for m in run]))
                    i = run[-1] + 1
                    continue
                blocks[-1]["lines"].extend(self.op(op, None))
                i += 1
                continue
            j = i
            while j < len(ops) and ops[j].loop == op.loop:
                j += 1
            info = prog.loops[op.loop]
            lines, inner_key = [], object()
            for lop in ops[i:j]:
                if lop.grad_of != inner_key:
                    inner_key = lop.grad_of
                    lines.append("")
                    lines += [self.comment(h) for h in self.head(lop.grad_of, False, backward)]
                lines += self.op(lop, op.loop)
            body = self.loop(info, [o.out for o in ops[i:j]], lines)
            blocks.append({"head": [f"loop over time steps: {info['title']}"], "lines": body})
            current_key = object()
            i = j
        return blocks


class Directions:
    """Mixin of both backends' emitters of the tangent part of
    ``hessian_columns`` over K directions at once (see
    ``Primitive.c_batched``): a batched variable of shape (r, c) is stored as
    (r, K, c).  In its code N stands for NB·K (NB the batch), so a per-sample
    batched variable keeps its shape, (N, c) meaning N·K rows; a fixed-size
    one is seen as (r·K, c) rows; ``lshape`` gives the shape of one
    direction, with NB for the batch.  Set ``self.batched`` (a set) first."""

    def is_batched(self, name: str) -> bool:
        return name in self.batched

    def shape(self, name, loop):
        r, c = super().shape(name, loop)
        if name in self.batched and isinstance(r, int):
            return (f"{r}*K", c)
        return (r, c)

    def lshape(self, name, loop) -> tuple:
        """The shape of one direction as code, NB the batch."""
        return tuple(str(d).replace("N", "NB") for d in Emitter.shape(self, name, loop))

    def batch(self, name: str) -> str:
        """The batch size of ``name``'s rows in this code: N or NB."""
        return "N" if name in self.batched else "NB"
