"""The NumPy backend: prints each lowered program as a Python function on
NumPy arrays, and the module around them from ``templates/`` and the
runtime files (copied verbatim).

Where results go (views, pieces written in place, in-place maps, the
outputs' vector, the workspace), the contiguous copies of transposed
loop-invariant operands and the loop-invariant factors computed before a
loop are decided by the optimisation passes (:mod:`bpgen.passes`: a
:class:`~bpgen.passes.NumpyPlan` on the program); this emitter prints them.
"""
from __future__ import annotations

import dataclasses
import os

from ...derivation import Derived
from ...ir import RESERVED
from ...lower import Program
from ...passes import Hoisted, plan_for
from ...primitives.map import assignable, numpy_expr
from ...printers import EquationPrinter
from ...shapes import broadcast_shape
from ...printers import NumpyPrinter, numeric
from ...shapes import code, dim_coeffs, plus, size_coeffs, times_n
from ..common.emitter import (Emitter, environment, has_steps,
                              offset_code, runtime_source)

__all__ = ["NumpyEmitter"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_env = environment(_HERE)


_PRINTER = NumpyPrinter()


class NumpyEmitter(Emitter):
    def __init__(self, prog: Program, dtype: str):
        # the decisions of the passes (bpgen.passes.NumpyPlan); ``hoistable``
        # says which names they must leave in their loop
        varying = {n for n in prog.vars if not self.hoistable(n)}
        self.plan = plan_for(prog, "numpy", varying)
        # our own copy of the variables, with the copies and hoisted values
        prog = dataclasses.replace(prog, vars={**prog.vars, **self.plan.new_vars})
        super().__init__(prog, dtype)
        self.loop_pre: dict = {}      # loop id -> lines before that loop
        self._names = set(prog.vars) | RESERVED
        self._allocated: set = set()
        self.ws: dict = {}            # temporary -> its shape, in this thread's workspace
        self._by_step: dict = {}      # (loop, sequence) -> its (steps, N, cols) view
        self._plan()

    # ---- names and storage ----------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def stepped(self, name: str, loop) -> bool:
        return (loop is not None and name in self.views) or super().stepped(name, loop)

    def comment(self, text: str) -> str:
        return f"# {text}"

    def acc(self, name: str, loop) -> str:
        """How ``name`` is read or written here: in a loop, step t of a
        sequence (its rows t*N .. t*N+N-1, as a (steps, N, cols) array)."""
        return f"{self.by_step(name, loop)}[t]" if self.stepped(name, loop) else name

    def cols(self, name: str, loop, start: int, stop: int) -> str:
        """Columns start .. stop-1 of ``name`` here."""
        if self.stepped(name, loop):
            return f"{self.by_step(name, loop)}[t, :, {start}:{stop}]"
        return f"{name}[:, {start}:{stop}]"

    def by_step(self, name: str, loop) -> str:
        """Sequence ``name`` seen step by step in ``loop``, (steps, N, cols):
        a view made before the loop (indexing it by t is cheaper than
        slicing rows)."""
        key = (loop, name)
        if key not in self._by_step:
            view = self._by_step[key] = self.fresh(name + "_t")
            steps, cols = self.prog.loops[loop]["steps"], self.prog.vars[name].shape[1]
            self.loop_pre.setdefault(loop, []).append(
                f"{view} = {name}.reshape({code(steps)}, {self.batch(name)}, {cols})  "
                f"# {name}, step by step")
        return self._by_step[key]

    def batch(self, name: str) -> str:
        """The batch size of ``name``'s rows in this code."""
        return "N"

    # ---- the plan: where each result goes (decided by bpgen.passes.storage) ----
    def _plan(self) -> None:
        st = self.plan.storage
        self.views = dict(st.views)           # state read -> its source (one step back)
        self.buffers = dict(st.buffers)       # source of state reads -> its buffer's name
        self.placed = dict(st.placed)         # concat piece -> (concat output, first column)
        self.inplace = dict(st.inplace)       # map output -> the dead temporary it overwrites
        self.flat = st.flat                   # the outputs' vector (None: no workspace)
        if self.flat:
            self._names.add(self.flat)

    def _full(self, op, loop) -> bool:
        """A map whose arguments broadcast to its whole output."""
        shapes = [self.shape(a, loop) for a in op.args]
        return bool(shapes) and broadcast_shape(shapes) == self.shape(op.out, loop)

    def into(self, op, loop):
        """Where ``op`` writes its result: ``(destination, bind)``, bind
        True when ``op.out`` is then bound to the destination (a temporary
        overwritten in place); None: a fresh array."""
        if op.out in self.placed:
            cat, pos = self.placed[op.out]
            return self.cols(cat, loop, pos, pos + self.shape(op.out, loop)[1]), False
        if op.out in self.inplace:
            return self.acc(self.inplace[op.out], loop), True
        if loop is not None and self.stepped(op.out, loop):
            return self.acc(op.out, loop), False
        if self.flat and op.out in self.prog.outputs:
            return op.out, False
        # a temporary of the function, or of one step of a loop (dead when
        # the step ends: one array serves every step), in the workspace
        if (op.out in self.plan.storage.workspace
                and self.slot(op.out, self.shape(op.out, loop))):
            return op.out, False
        return None

    def slot(self, name: str, shape) -> bool:
        """Put temporary ``name`` in the workspace (when the function has
        one: when its outputs are fresh arrays of their own, see _plan)."""
        if not self.flat:
            return False
        self.ws.setdefault(name, tuple(shape))
        return True

    def alloc(self, name: str, rows, cols) -> str:
        return f"{name} = numpy.empty(({rows}, {cols}), dtype=DTYPE)"

    # ---- statements ------------------------------------------------------------
    def statement(self, op, prim, loop) -> list:
        eq = f"{op.out} = {prim.equation(op, {})}"
        lines = []
        if op.out in self.placed:
            cat, pos = self.placed[op.out]
            if (cat not in self._allocated and not self.stepped(cat, loop)
                    and not (self.flat and cat in self.prog.outputs)):
                rows, cols = self.shape(cat, loop)
                line = self.alloc(cat, rows, cols)
                if self.slot(cat, (rows, cols)):
                    pass
                elif loop is None:
                    lines.append(line)
                else:           # one step's worth, reused by every step
                    self.loop_pre.setdefault(loop, []).append(line)
                self._allocated.add(cat)
        if op.out in self.views:
            src = self.views[op.out]
            return [self.comment(eq),
                    f"# (a view of {src}, one step back: no copy)"]
        for item in self.plan.pre.get(op.out, ()):     # made before the loop
            self.loop_pre.setdefault(item.loop, []).extend(self.pre_loop(item))
        op = self.plan.printed.get(op.out, op)
        code = prim.numpy(self, op, loop)
        if isinstance(code, list):          # the primitive wrote whole lines
            return lines + [self.comment(eq)] + code
        into = self.into(op, loop) if op.out in self.prog.outputs else None
        code = f"{assignable(into[0]) if into else self.acc(op.out, loop)} = {code}"
        return lines + [self.comment(eq), code]     # the equation above every statement

    def pre_loop(self, item) -> list:
        """The lines computing a value before its loop: a contiguous copy of
        a transposed operand, or a hoisted factor (bpgen.passes)."""
        if not isinstance(item, Hoisted):
            return [f"{item.name} = numpy.ascontiguousarray({item.source}.T)  "
                    f"# {item.source}ᵀ, contiguous"]
        into = ((item.name, False) if _PRINTER.can_into(numeric(item.expr))
                and self.slot(item.name, item.shape) else None)
        return ([self.comment(f"{EquationPrinter({}).doprint(item.expr)}: every step at once")]
                + numpy_expr(item.expr, {n: n for n in item.args}, item.name, into))

    def hoistable(self, name: str) -> bool:
        """May a value computed from ``name`` move before a loop?  (What the
        passes are told: see bpgen.passes.plan_for's ``varying``.)"""
        return True

    def _in_loop(self, a: str, loop) -> bool:
        """Does ``a`` change from step to step of ``loop``?"""
        v = self.prog.vars[a]
        return (not self.hoistable(a) or v.loop == loop
                or v.shape[0] == self.prog.loops[loop]["seq"])

    def loop(self, info, defined, body) -> list:
        steps = info["steps"]
        lines = []
        for name in defined:
            if (name not in self.prog.step_vars and name not in self.prog.outputs
                    and name not in self.views):
                lines += self._storage(name, info)
        here = self.prog.vars[defined[0]].loop
        lines += self.loop_pre.get(here, [])
        copies = here in self.plan.storage.copy_loops     # a state read that copies
        last, steps = code(plus(steps, -1)), code(steps)
        if copies:
            lines += [f"for it in range({steps}):",
                      f"    t = {last} - it" if info["reverse"] else "    t = it"]
        else:
            lines.append(f"for t in range({last}, -1, -1):" if info["reverse"]
                         else f"for t in range({steps}):")
        if copies:
            lines += ["    r0, r1 = t*N, t*N + N  # rows of step t",
                      "    q0, q1 = " + ("r1, r1 + N" if info["reverse"] else "r0 - N, r0")
                      + "  # rows of the previous iteration's step"]
        lines += [("    " + line) if line else "" for line in body]
        return lines

    def _storage(self, name: str, info) -> list:
        """Lines allocating every step of loop variable ``name``; a source
        of state reads gets a block of zero rows where the first iteration's
        read lands (before step 0, or after the last step in a reverse loop),
        and the reads are views of that buffer."""
        steps, cols = info["steps"], self.prog.vars[name].shape[1]
        rows, more = times_n(steps), times_n(plus(steps, 1))
        if name not in self.buffers:
            if self.slot(name, (rows, cols)):
                return []
            return [self.alloc(name, rows, cols)]
        buf = self.fresh(name + "_z")
        alloc = ([] if self.slot(buf, (more, cols))
                 else [self.alloc(buf, more, cols)])
        reads = [v for v, s in self.views.items() if s == name]
        if info["reverse"]:
            lines = alloc + [f"{buf}[{rows}:] = 0  # {name}, then N zero rows",
                             f"{name} = {buf}[:{rows}]"]
            lines += [f"{v} = {buf}[N:]  # {name} of the previous iteration (step t+1)"
                      for v in reads]
        else:
            lines = alloc + [f"{buf}[:N] = 0  # N zero rows, then {name}",
                             f"{name} = {buf}[N:]"]
            lines += [f"{v} = {buf}[:{rows}]  # {name} of the previous iteration (step t-1)"
                      for v in reads]
        return lines

    def workspace_lines(self) -> list:
        """The temporaries that live in this thread's workspace, bound first."""
        if not self.ws:
            return []
        names = list(self.ws)
        lines = ["# this thread's arrays for the temporaries, the same at every call "
                 "(_workspace):", "# shapes (a, b, columns), a*N + b rows"]
        rows = [[]]
        for name in names:          # the names, a few to a line
            if rows[-1] and len(", ".join(rows[-1] + [name])) > 80:
                rows.append([])
            rows[-1].append(name)
        text = ",\n ".join(", ".join(r) for r in rows)
        text += "," if len(names) == 1 else ""
        lines += f"({text}) = _workspace({self.prog.name!r}, N, (".split("\n")
        for k, name in enumerate(names):
            rows, cols = self.ws[name]
            a, b = dim_coeffs(rows)
            end = ",))" if k == len(names) - 1 else ","
            lines.append(f"    ({code(a, True)}, {code(b, True)}, {code(cols, True)}){end}  "
                         f"# {name}")
        return lines

    def blocks(self) -> list:
        blocks = super().blocks()
        pre = self.pre_lines()
        if not pre:
            return blocks
        head = ("the outputs, one after the other in one vector (returned without a copy)"
                if self.flat else "outputs written step by step in a loop")
        return [{"head": [head], "lines": pre}] + blocks

    def pre_lines(self) -> list:
        """The outputs, allocated first: one after the other in one vector;
        else (an output is a buffer of state reads) those defined in a loop,
        which are written step by step."""
        if self.flat:
            sizes = [size_coeffs(self.prog.vars[o].shape) for o in self.prog.outputs]
            total = offset_code(sum(a for a, _ in sizes), sum(b for _, b in sizes))
            lines = [f"{self.flat} = numpy.empty({total}, dtype=DTYPE)  # the outputs, in order"]
            pa, pb = 0, 0
            for o, (a, b) in zip(self.prog.outputs, sizes):
                r, c = self.prog.vars[o].shape
                lines.append(f"{o} = {self.flat}[{offset_code(pa, pb)}:"
                             f"{offset_code(pa + a, pb + b)}].reshape({r}, {c})")
                pa, pb = pa + a, pb + b
            return lines + self.workspace_lines()
        lines = []
        for o in self.prog.outputs:
            v = self.prog.vars[o]
            if v.loop is None:
                continue
            info = self.prog.loops[v.loop]
            if o in self.buffers:
                lines += self._storage(o, info)
            else:
                lines.append(self.alloc(o, v.shape[0], v.shape[1]))
        return lines


def steps_args(prog: Program, args: list) -> list:
    """A function's arguments; with steps: any (x has T*N rows), T after x:
    the step count, read from x at call time (the API passes it)."""
    if not has_steps(prog) or "x" not in args:
        return list(args)
    i = list(args).index("x") + 1
    return list(args[:i]) + ["T"] + list(args[i:])


def _function(prog: Program, dtype: str) -> dict:
    return {"name": prog.name, "args": steps_args(prog, prog.inputs), "returns": prog.outputs,
            "pre": [], "blocks": NumpyEmitter(prog, dtype).blocks()}


def _assembly_function(derived: Derived, name: str) -> dict:
    """An assembly (the structured Hessian) as a Python function: the
    curvature program's outputs, then one block per op, headed by its
    equation."""
    asm = derived.assemblies[name]
    pre = [f"{', '.join(asm.curvature_outputs)} = _curvature({', '.join(asm.inputs)})"]
    pre += [f"{o} = numpy.empty(({rows}, {cols}), dtype=DTYPE)" for o, rows, cols in asm.outputs]
    blocks = [{"head": [op.equation(asm).text()], "lines": op.numpy(asm)} for op in asm.ops]
    return {"name": name, "args": asm.inputs, "returns": [o for o, _, _ in asm.outputs],
            "pre": pre, "blocks": blocks}


def _runtime(name: str) -> str:
    return runtime_source(os.path.join(_HERE, "runtime", name))
