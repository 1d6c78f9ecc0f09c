"""The NumPy module: every entry point's function (``emitter.py`` prints
programs and assemblies, ``columns.py`` the hessian_columns head and
tangent functions) and the runtime, put together from ``templates/``."""
from __future__ import annotations

import os

from ...derivation import Derived
from ..common.context import constant, module_context
from ... import patterns
from ..common.emitter import common_runtime, runtime_source
from .columns import columns_functions, tangent_bytes
from .emitter import _assembly_function, _env, _function, _runtime

__all__ = ["emit"]


def emit(derived: Derived, module: str) -> dict:
    """{file name: text} of the NumPy module."""
    spec = derived.spec
    functions = [_assembly_function(derived, name) if entry.kind == "assembly"
                 else _function(derived.programs[name], spec.dtype)
                 for name, entry in derived.entries.items()
                 if "numpy" in entry.backends and entry.kind != "columns"]
    functions += columns_functions(derived)     # hessian_columns: [] or two functions
    ctx = dict(module_context(derived, module),
               functions=functions,
               tangent_bytes=tuple(constant(v) for v in tangent_bytes(derived)),
               batch_expr=spec.input.batch_expr("x"),
               runtime_api=common_runtime("api.py"),
               runtime_hessian=common_runtime("hessian.py"),
               runtime_per_sample=common_runtime("per_sample.py"),
               runtime_helpers=_runtime("helpers.py"),
               runtime_patterns=runtime_source(os.path.abspath(patterns.__file__)),
               runtime_call=_runtime("call.py"))
    return {f"{module}.py": _env.get_template("module.py.j2").render(**ctx)}
