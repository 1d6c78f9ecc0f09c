"""The NumPy backend: prints each lowered program as a Python function on
NumPy arrays, and the module around them from ``templates/`` and the
runtime files (copied verbatim).

Before printing, the emitter decides where results go, so that the printed
code allocates little and calls few ufuncs (the C backend's program is not
changed by any of this):

* the outputs are views of one vector allocated at each call, which the
  API returns without a copy (``_run_flat``); every other array the
  function fills is a temporary in the calling thread's workspace, the
  same arrays at every call (``_workspace``), so results stay fresh while
  temporaries cost no allocation;
* an op whose result is stored for every step of a loop writes into that
  step's rows (``out=``) instead of allocating a temporary and copying it;
* a map used only by a concatenation writes into its columns of the result;
* a map whose argument is a temporary of the same shape that is not used
  again writes into it (in place);
* a recurrent state read (``prev``) is a view, one step back, of its source,
  stored after (or before, in a reverse loop) a block of zero rows: no copy;
* inside a loop, a transposed loop-invariant matrix operand is copied once,
  contiguous, before the loop (BLAS is faster on it than on a transpose
  with few rows), and the factors of an elementwise expression that do not
  change from step to step are computed before the loop, for all steps at
  once.
"""
from __future__ import annotations

import dataclasses
import os

import sympy as sp

from ...derivation import Derived
from ...ir import RESERVED, Var
from ...lower import Program
from ...primitives.map import assignable, numpy_expr
from ...printers import EquationPrinter
from ...shapes import broadcast_shape
from ..common.context import module_context
from ...printers import NumpyPrinter, numeric
from ...shapes import dim_coeffs, size_coeffs
from ..common.emitter import (Emitter, common_runtime, environment,
                              offset_code, runtime_source)

__all__ = ["NumpyEmitter", "emit"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_env = environment(_HERE)


_PRINTER = NumpyPrinter()

#: primitives whose NumPy result may be a view of their argument
_VIEWS = {"cols", "rows", "cut", "prev"}


class NumpyEmitter(Emitter):
    def __init__(self, prog: Program, dtype: str):
        # our own copy of the variables: the emitter adds a few (hoisted values)
        prog = dataclasses.replace(prog, vars=dict(prog.vars))
        super().__init__(prog, dtype)
        self.loop_pre: dict = {}      # loop id -> lines before that loop
        self.views: dict = {}         # state read -> its source (a view one step back)
        self.buffers: dict = {}       # source of state reads -> its buffer's name
        self.placed: dict = {}        # concat piece -> (concat output, first column)
        self.inplace: dict = {}       # map output -> the dead temporary it overwrites
        self.transposed: dict = {}    # (loop, var) -> its contiguous transpose
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
                f"{view} = {name}.reshape({steps}, {self.batch(name)}, {cols})  "
                f"# {name}, step by step")
        return self._by_step[key]

    def batch(self, name: str) -> str:
        """The batch size of ``name``'s rows in this code."""
        return "N"

    # ---- the plan: where each result goes ---------------------------------------
    def _plan(self) -> None:
        prog, ops = self.prog, self.prog.ops
        self.producer = {op.out: i for i, op in enumerate(ops)}
        self.last_use, uses = {}, {}
        for i, op in enumerate(ops):
            for a in op.args:
                self.last_use[a] = i
                uses[a] = uses.get(a, 0) + 1
        for o in prog.outputs:
            uses[o] = uses.get(o, 0) + 1
        # arguments that another variable may be a view of (blocks of rows or
        # columns, an alias): never overwritten in place
        self.viewed = {a for op in ops if op.prim in _VIEWS or (
            op.prim == "map" and op.attrs["expr"].is_Symbol) for a in op.args}
        for i, op in enumerate(ops):
            # state reads: views of their source, stored after a block of zeros
            if (op.prim == "prev" and op.args and op.args[0] not in prog.step_vars
                    and op.args[0] not in prog.inputs):
                self.views[op.out] = op.args[0]
                self.buffers.setdefault(op.args[0], None)
            # concatenations: their pieces written in place
            if op.prim == "concat" and op.out not in self.views:
                pos = 0
                for a in op.args:
                    p = ops[self.producer[a]] if a in self.producer else None
                    if (p is not None and p.prim == "map" and p.loop == op.loop
                            and uses.get(a) == 1 and self._full(p, p.loop)
                            and not p.attrs["expr"].is_Symbol):
                        self.placed[a] = (op.out, pos)
                    pos += self.shape(a, op.loop)[1]
        # the outputs, written where the caller finds them: one after the
        # other in one vector (see _run_flat), unless one cannot be
        outs = prog.outputs
        self.flat = None
        if (outs and len(set(outs)) == len(outs) and all(
                o in self.producer and o not in self.buffers and o not in self.views
                for o in outs)):
            self.flat = self.fresh("flat")
        for i, op in enumerate(ops):
            if op.prim != "map" or op.out in self.placed or op.out in prog.outputs:
                continue
            if self.stepped(op.out, op.loop) or not self._full(op, op.loop):
                continue
            for a in op.args:
                if self._dead_temp(a, i, op):
                    self.inplace[op.out] = a
                    break

    def _full(self, op, loop) -> bool:
        """A map whose arguments broadcast to its whole output."""
        shapes = [self.shape(a, loop) for a in op.args]
        return bool(shapes) and broadcast_shape(shapes) == self.shape(op.out, loop)

    def _dead_temp(self, a: str, i: int, op) -> bool:
        """Is ``a`` an array of this function's own, of ``op``'s shape, that
        no op after the i-th reads (so ``op`` may overwrite it)?"""
        prog = self.prog
        p = prog.ops[self.producer[a]] if a in self.producer else None
        if (p is None or a in prog.outputs or self.last_use.get(a) != i
                or a in self.views or a in self.buffers or a in self.placed
                or a in self.viewed):
            return False
        if p.prim == "map":
            if p.attrs["expr"].is_Symbol:         # an alias of its argument
                return False
        elif p.prim != "matmul":
            return False
        if p.loop != op.loop or (op.loop is not None and a not in prog.step_vars):
            return False
        return self.shape(a, op.loop) == self.shape(op.out, op.loop)

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
        if ((loop is None or op.out in self.prog.step_vars) and op.prim in ("matmul", "map")
                and op.out not in self.prog.outputs
                and (op.prim == "matmul" or (self._full(op, loop) and _PRINTER.can_into(
                    numeric(op.attrs["expr"])))) and self.slot(op.out, self.shape(op.out, loop))):
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
        if op.prim == "prev" and op.out in self.views:
            src = self.views[op.out]
            return [self.comment(eq),
                    f"# (a view of {src}, one step back: no copy)"]
        if op.prim == "matmul" and loop is not None:
            op = self._hoist_transposes(op, loop)
        if op.prim == "map" and loop is not None:
            op = self._hoist_invariants(op, loop)
        code = prim.numpy(self, op, loop)
        if isinstance(code, list):          # the primitive wrote whole lines
            return lines + [self.comment(eq)] + code
        into = self.into(op, loop) if op.out in self.prog.outputs else None
        code = f"{assignable(into[0]) if into else self.acc(op.out, loop)} = {code}"
        if eq.replace(" ", "") != code.replace(" ", ""):
            lines.append(self.comment(eq))
        return lines + [code]

    def _hoist_transposes(self, op, loop):
        """A transposed operand that does not change in the loop: its
        contiguous transpose, made once before the loop."""
        args, attrs = list(op.args), dict(op.attrs)
        for k, flag in ((0, "ta"), (1, "tb")):
            a = args[k]
            if not attrs[flag] or self._in_loop(a, loop):
                continue
            key = (loop, a)
            if key not in self.transposed:
                name = self.fresh(a + "_T")
                r, c = self.prog.vars[a].shape
                self.prog.vars[name] = Var(name, (c, r))
                self.loop_pre.setdefault(loop, []).append(
                    f"{name} = numpy.ascontiguousarray({a}.T)  # {a}ᵀ, contiguous")
                self.transposed[key] = name
            args[k], attrs[flag] = self.transposed[key], False
        return dataclasses.replace(op, args=tuple(args), attrs=attrs)

    def hoistable(self, name: str) -> bool:
        """May a value computed from ``name`` move before a loop?"""
        return True

    def _in_loop(self, a: str, loop) -> bool:
        """Does ``a`` change from step to step of ``loop``?"""
        v = self.prog.vars[a]
        return v.loop == loop or v.shape[0] == self.prog.loops[loop]["seq"]

    def _hoist_invariants(self, op, loop):
        """The map with its step-invariant parts (functions of values
        computed before the loop) computed before the loop, for all steps
        at once."""
        expr = op.attrs["expr"]
        defined = {o.out for o in self.prog.ops if o.loop == loop}

        def before(e) -> bool:     # computable before the loop, from arrays
            names = [s.name for s in e.free_symbols if s.name in self.prog.vars]
            return bool(names) and not any(n in defined or not self.hoistable(n)
                                           for n in names)

        def worth(e) -> bool:      # an operation, not a bare value
            return not (e.is_Symbol or e.is_Number)

        def split(e):
            if before(e) and worth(e):
                return self._hoisted_value(e, loop)
            if e.is_Add or e.is_Mul:
                inv = [a for a in e.args if before(a)]
                rest = [split(a) for a in e.args if not before(a)]
                if len(inv) >= 2 or (len(inv) == 1 and worth(inv[0])):
                    inv = [self._hoisted_value(e.func(*inv), loop)]
                return e.func(*inv, *rest)
            if e.is_Pow:
                return e.func(split(e.base), e.exp)
            if isinstance(e, sp.Function) and not isinstance(e, sp.Piecewise):
                return e.func(*[split(a) for a in e.args])
            return e

        new = split(expr)
        if new == expr:
            return op
        args = tuple(sorted(s.name for s in new.free_symbols if s.name in self.prog.vars))
        return dataclasses.replace(op, args=args, attrs={**op.attrs, "expr": new})

    def _hoisted_value(self, e, loop) -> sp.Symbol:
        """A variable holding ``e`` (computed before ``loop``)."""
        memo = self.__dict__.setdefault("_hoisted", {})
        key = (loop, sp.srepr(e))
        if key not in memo:
            # function calls on their own first: computed once if shared
            calls = sorted((f for f in e.atoms(sp.Function) if f != e
                            and not isinstance(f, sp.Piecewise)),
                           key=lambda f: len(sp.srepr(f)))
            for f in calls:
                if f in e.atoms(sp.Function):
                    e = e.xreplace({f: self._hoisted_value(f, loop)})
            names = sorted(s.name for s in e.free_symbols if s.name in self.prog.vars)
            shape = broadcast_shape([self.prog.vars[n].shape for n in names])
            name = self.fresh("fac")
            self.prog.vars[name] = Var(name, shape)
            into = ((name, False) if _PRINTER.can_into(numeric(e)) and self.slot(name, shape)
                    else None)
            self.loop_pre.setdefault(loop, []).extend(
                [self.comment(f"{EquationPrinter({}).doprint(e)}: every step at once")]
                + numpy_expr(e, {n: n for n in names}, name, into))
            memo[key] = sp.Symbol(name)
        return memo[key]

    def loop(self, info, defined, body) -> list:
        steps = info["steps"]
        lines = []
        for name in defined:
            if (name not in self.prog.step_vars and name not in self.prog.outputs
                    and name not in self.views):
                lines += self._storage(name, info)
        lines += self.loop_pre.get(self.prog.vars[defined[0]].loop, [])
        if any("it ==" in line for line in body):      # a state read that copies
            lines += [f"for it in range({steps}):",
                      f"    t = {steps - 1} - it" if info["reverse"] else "    t = it"]
        else:
            lines.append(f"for t in range({steps - 1}, -1, -1):" if info["reverse"]
                         else f"for t in range({steps}):")
        if any("q0" in line for line in body):    # a state read that copies
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
        if name not in self.buffers:
            if self.slot(name, (f"{steps}*N", cols)):
                return []
            return [self.alloc(name, f"{steps}*N", cols)]
        buf = self.fresh(name + "_z")
        alloc = ([] if self.slot(buf, (f"{steps + 1}*N", cols))
                 else [self.alloc(buf, f"{steps + 1}*N", cols)])
        reads = [v for v, s in self.views.items() if s == name]
        if info["reverse"]:
            lines = alloc + [f"{buf}[{steps}*N:] = 0  # {name}, then N zero rows",
                             f"{name} = {buf}[:{steps}*N]"]
            lines += [f"{v} = {buf}[N:]  # {name} of the previous iteration (step t+1)"
                      for v in reads]
        else:
            lines = alloc + [f"{buf}[:N] = 0  # N zero rows, then {name}",
                             f"{name} = {buf}[N:]"]
            lines += [f"{v} = {buf}[:{steps}*N]  # {name} of the previous iteration (step t-1)"
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
            lines.append(f"    ({a}, {b}, {cols}){end}  # {name}")
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


def _function(prog: Program, dtype: str) -> dict:
    return {"name": prog.name, "args": prog.inputs, "returns": prog.outputs,
            "pre": [], "blocks": NumpyEmitter(prog, dtype).blocks()}


def _assembly_function(derived: Derived, name: str) -> dict:
    """An assembly (the structured Hessian) as a Python function: the
    curvature program's outputs, then one block per op, headed by its
    equation."""
    asm = derived.assemblies[name]
    pre = [f"{', '.join(asm.curvature_outputs)} = _curvature({', '.join(asm.inputs)})"]
    pre += [f"{o} = numpy.empty(({rows}, {cols}), dtype=DTYPE)" for o, rows, cols in asm.outputs]
    blocks = [{"head": [op.equation(asm)[0]], "lines": op.numpy(asm)} for op in asm.ops]
    return {"name": name, "args": asm.inputs, "returns": [o for o, _, _ in asm.outputs],
            "pre": pre, "blocks": blocks}


def _runtime(name: str) -> str:
    return runtime_source(os.path.join(_HERE, "runtime", name))


def emit(derived: Derived, module: str) -> dict:
    """{file name: text} of the NumPy module."""
    spec = derived.spec
    from .columns import columns_functions, tangent_bytes
    functions = [_assembly_function(derived, name) if entry.kind == "assembly"
                 else _function(derived.programs[name], spec.dtype)
                 for name, entry in derived.entries.items()
                 if "numpy" in entry.backends and entry.kind != "columns"]
    functions += columns_functions(derived)     # hessian_columns: [] or two functions
    ctx = dict(module_context(derived, module),
               functions=functions,
               tangent_bytes=tangent_bytes(derived),
               batch_expr=("x.shape[0]" if spec.input.kind != "sequence"
                           else f"x.shape[0] // {spec.input.shape[0]}"),
               runtime_api=common_runtime("api.py"),
               runtime_hessian=common_runtime("hessian.py"),
               runtime_helpers=_runtime("helpers.py"),
               runtime_patterns=common_runtime("patterns.py"),
               runtime_call=_runtime("call.py"))
    return {f"{module}.py": _env.get_template("module.py.j2").render(**ctx)}
