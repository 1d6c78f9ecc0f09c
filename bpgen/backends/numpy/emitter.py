"""The NumPy backend: prints each lowered program as a Python function on
NumPy arrays, and the module around them from ``templates/`` and the
runtime files (copied verbatim)."""
from __future__ import annotations

import os

from ...derivation import Derived
from ...lower import Program
from ..common.context import module_context
from ..common.emitter import Emitter, common_runtime, environment, runtime_source

__all__ = ["NumpyEmitter", "emit"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_env = environment(_HERE)


class NumpyEmitter(Emitter):
    def comment(self, text: str) -> str:
        return f"# {text}"

    def acc(self, name: str, loop) -> str:
        """How ``name`` is read or written here: one step's rows in a loop."""
        return f"{name}[r0:r1]" if self.stepped(name, loop) else name

    def statement(self, op, prim, loop) -> list:
        eq = f"{op.out} = {prim.equation(op, {})}"
        code = prim.numpy(self, op, loop)
        if isinstance(code, list):          # the primitive wrote whole lines
            return [self.comment(eq)] + code
        code = f"{self.acc(op.out, loop)} = {code}"
        lines = []
        if eq.replace(" ", "") != code.replace(" ", ""):
            lines.append(self.comment(eq))
        return lines + [code]

    def loop(self, info, defined, body) -> list:
        steps = info["steps"]
        lines = [f"{name} = numpy.empty(({steps}*N, {self.prog.vars[name].shape[1]}), "
                 f"dtype=DTYPE)" for name in defined
                 if name not in self.prog.step_vars and name not in self.prog.outputs]
        lines += [f"for it in range({steps}):",
                  f"    t = {steps - 1} - it" if info["reverse"] else "    t = it",
                  "    r0, r1 = t*N, t*N + N  # rows of step t",
                  "    q0, q1 = " + ("r1, r1 + N" if info["reverse"] else "r0 - N, r0")
                  + "  # rows of the previous iteration's step"]
        lines += [("    " + line) if line else "" for line in body]
        return lines


def _function(prog: Program, dtype: str) -> dict:
    # outputs defined in a loop are written step by step: allocate them first
    pre = [f"{o} = numpy.empty(({prog.vars[o].shape[0]}, {prog.vars[o].shape[1]}), "
           f"dtype=DTYPE)" for o in prog.outputs if prog.vars[o].loop is not None]
    return {"name": prog.name, "args": prog.inputs, "returns": prog.outputs,
            "pre": pre, "blocks": NumpyEmitter(prog, dtype).blocks()}


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
    ctx = dict(module_context(derived, module),
               functions=[_assembly_function(derived, name) if entry.kind == "assembly"
                          else _function(derived.programs[name], spec.dtype)
                          for name, entry in derived.entries.items()
                          if "numpy" in entry.backends],
               batch_expr=("x.shape[0]" if spec.input.kind != "sequence"
                           else f"x.shape[0] // {spec.input.shape[0]}"),
               runtime_api=common_runtime("api.py"),
               runtime_hessian=common_runtime("hessian.py"),
               runtime_helpers=_runtime("helpers.py"),
               runtime_patterns=common_runtime("patterns.py"),
               runtime_call=_runtime("call.py"))
    return {f"{module}.py": _env.get_template("module.py.j2").render(**ctx)}
