"""The C module: every entry point's function (``emitter.py`` prints
programs and assemblies, ``columns.py`` the hessian_columns driver), the
runtime helpers they call, the CPython entry points and the Python wrapper,
put together from ``templates/``."""
from __future__ import annotations

import hashlib
import os

from ...derivation import Derived
from ..common.context import constant, module_context
from ...shapes import code, symbolic
from ..common.emitter import common_runtime, runtime_source
from . import build
from .columns import columns_function
from .emitter import HELPERS, _HERE, _assembly_function, _env, _function, _table_lines
from .fastcall import CDEF as FASTCALL_CDEF, fastcall_source
from .per_sample import c_functions as per_sample_functions

__all__ = ["emit"]


def emit(derived: Derived, module: str) -> tuple:
    """({file name: text}, C source, cdef, extension name) of the C module."""
    spec = derived.spec
    used: set = set()
    tables: dict = {}
    functions = [columns_function(derived, used, tables) if name == "hessian_columns"
                 else _assembly_function(derived, name, used, tables)
                 if entry.kind == "assembly" else _function(derived, name, used, tables)
                 for name, entry in derived.entries.items() if "c" in entry.backends]
    # per_sample_grad_norms and clipped_grad in one C call each (an
    # architecture whose summands they cannot take keeps the Python route)
    per_sample = per_sample_functions(derived, functions, used)[0]
    functions += per_sample
    if any(f["name"] == "hessian_columns" for f in functions):
        used.add("symmetrise")      # the wrapper's hessian() symmetrises with it (call.py)
    runtime = [runtime_source(os.path.join(_HERE, "runtime", "prelude.c"))]
    runtime += [runtime_source(os.path.join(_HERE, "runtime", f"{h}.c"))
                for h in HELPERS if h in used]
    if per_sample:              # their loops (after the helpers they call)
        runtime.append(runtime_source(os.path.join(_HERE, "runtime", "per_sample.c")))
    common = module_context(derived, module)
    ctype = "double" if spec.dtype == "float64" else "float"
    # the CPython entry points (fastcall.py): after the functions they call
    # (none with steps: any: the wrapper's Python path serves every call)
    fastcall = ("" if symbolic(spec.input.steps)
                else fastcall_source(derived, functions, common["bytes_per_sample"]))
    config = build.config_for(spec.dtype)     # BPGEN_BLAS: which BLAS, see blas.py
    # each function's workspace as code (with steps: any, polynomials in T)
    shown = [dict(f, ws=tuple(code(v) for v in f["ws"])) for f in functions]
    c_source = _env.get_template("module.c.j2").render(
        **common, functions=shown, runtime=runtime, fastcall=fastcall,
        tables=[_table_lines(values, name) for values, name in tables.items()],
        defines=(["BPG_FLOAT32"] if spec.dtype == "float32" else []) + list(config.defines))
    cdef = "\n".join([f"{f['signature']};" for f in functions]
                     + ["void bpg_set_threads(int n);", "int bpg_get_threads(void);",
                        "void *bpg_threads_state(void);", "void bpg_threads_share(void *state);",
                        "int bpg_threads_enter(double work);", "void bpg_threads_leave(int large);"]
                     + (["void bpg_symmetrise(int64_t n, real *h);"] if "symmetrise" in used else [])
                     + (FASTCALL_CDEF if fastcall else [])).replace("restrict ", "")
    cdef = cdef.replace("real", ctype)
    # named by the code's own hash and the build configuration: a changed
    # generator or compiler flag never reuses a stale extension
    code_hash = hashlib.sha256((c_source + cdef + config.key()).encode()).hexdigest()
    ext_name = f"_bpgen_{spec.name}_{code_hash[:12]}"
    wrapper = _env.get_template("wrapper.py.j2").render(
        **common, ext_name=ext_name, cdef=cdef, ctype=ctype, c_file=f"{module}.c",
        ws={f["name"]: tuple(constant(v) for v in f["ws"]) for f in functions},
        ws_dir={f["name"]: tuple(constant(v) for v in f["ws_dir"])
                for f in functions if "ws_dir" in f},
        runtime_api=common_runtime("api.py"), runtime_hessian=common_runtime("hessian.py"),
        runtime_per_sample=common_runtime("per_sample.py"),
        runtime_call=runtime_source(os.path.join(_HERE, "runtime", "call.py")),
        runtime_fastcall=runtime_source(os.path.join(_HERE, "runtime", "fastcall.py")))
    return {f"{module}.py": wrapper, f"{module}.c": c_source}, c_source, cdef, ext_name
