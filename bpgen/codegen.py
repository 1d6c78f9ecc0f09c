"""Stage 4: lowered programs -> template contexts -> source text.

All decisions are made here in Python; the Jinja2 templates only place the
lines this module computes (``undefined=StrictUndefined``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

import jinja2
import sympy as sp

from . import __version__
from .equations import op_equation
from .ir import broadcast_shape
from .lower import Program, lower, size_coeffs
from .network import Derivation, derive
from .printers import CPrinter, NumpyPrinter, numeric
from .spec import Spec

__all__ = ["Generated", "generate", "module_names"]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("bpgen", "templates"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    trim_blocks=True, lstrip_blocks=True, autoescape=False)


@dataclass
class Generated:
    """Generated sources: file name -> text, plus what the C build needs."""
    files: dict
    module: str               # the importable module's file stem
    c_source: str | None = None
    cdef: str | None = None
    ext_name: str | None = None


def module_names(spec: Spec, backend: str) -> str:
    return f"{spec.name}_{'numpy' if backend == 'numpy' else 'c'}"


# ---------------------------------------------------------------------------
# programs

def programs(d: Derivation) -> dict:
    """The three entry points as lowered programs."""
    g = d.graph
    pv = list(d.params.values())
    return {
        "forward": lower(g, "forward", [d.x] + pv, [d.output], d.n_forward),
        "loss": lower(g, "loss", [d.x, d.y] + pv, [d.loss], d.n_forward),
        "loss_and_grad": lower(g, "loss_and_grad", [d.x, d.y] + pv,
                               [d.loss] + list(d.grads.values()), d.n_forward),
    }


def _blocks(prog: Program, op_line) -> list:
    """Ops grouped into commented blocks: forward, then one block per
    forward op that the backward pass differentiates."""
    blocks, current_key = [], object()
    for op in prog.ops:
        key = op.grad_of
        if key != current_key:
            if key is None and not blocks:
                head = ["forward pass"]
            elif key is None:
                head = ["total gradients"]
            else:
                fop = prog.forward_ops[key]
                head = [f"Grad of: {op_equation(fop)}"]
                if fop.comment:
                    head.append(f"  ({fop.comment})")
            blocks.append({"head": head, "lines": []})
            current_key = key
        blocks[-1]["lines"].extend(op_line(op))
    return blocks


def _is_backward(op) -> bool:
    return op.grad_of is not None


# ---------------------------------------------------------------------------
# NumPy

def _np_dim(d) -> str:
    return "N" if d == "N" else str(d)


def _numpy_op(prog: Program, dtype: str):
    printer = NumpyPrinter()

    def line(op):
        out = op.out
        shape = prog.vars[out].shape
        eq = op_equation(op)
        if op.prim == "matmul":
            a, b = op.args
            rhs = f"{a}{'.T' if op.attrs['ta'] else ''} @ {b}{'.T' if op.attrs['tb'] else ''}"
        elif op.prim == "map":
            expr = numeric(op.attrs["expr"])
            rhs = printer.doprint(expr)
            arg_shapes = [prog.vars[a].shape for a in op.args]
            if not arg_shapes or broadcast_shape(arg_shapes) != shape:
                rhs = f"_full({rhs}, ({_np_dim(shape[0])}, {_np_dim(shape[1])}))"
        elif op.prim == "sum":
            axis = op.attrs["axis"]
            rhs = (f"{op.args[0]}.sum(keepdims=True)" if axis is None
                   else f"{op.args[0]}.sum(axis={axis}, keepdims=True)")
        elif op.prim == "rowmax":
            rhs = f"{op.args[0]}.max(axis=1, keepdims=True)"
        else:
            raise ValueError(op.prim)
        lines = []
        if op.comment and not _is_backward(op):
            lines.append(f"# {op.comment}")
        code = f"{out} = {rhs}"
        if eq.replace(" ", "") != code.replace(" ", ""):
            lines.append(f"# {eq}")
        lines.append(code)
        return lines
    return line


def _numpy_function(prog: Program, dtype: str) -> dict:
    return {"name": prog.name, "args": prog.inputs, "returns": prog.outputs,
            "blocks": _blocks(prog, _numpy_op(prog, dtype))}


# ---------------------------------------------------------------------------
# C

def _c_size(shape) -> str:
    a, b = size_coeffs(shape)
    if a and b:
        return f"{a}*N + {b}"
    if a:
        return "N" if a == 1 else f"{a}*N"
    return str(b)


def _c_dim(d) -> str:
    return "N" if d == "N" else str(d)


def _c_op(prog: Program, dtype: str):
    def line(op):
        out = op.out
        r, c = prog.vars[out].shape
        lines = []
        if op.comment and not _is_backward(op):
            lines.append(f"/* {op.comment} */")
        lines.append(f"/* {op_equation(op)} */")
        if op.prim == "matmul":
            a, b = op.args
            ta, tb = op.attrs["ta"], op.attrs["tb"]
            sa = prog.vars[a].shape
            k = sa[0] if ta else sa[1]
            kind = ("t" if ta else "n") + ("t" if tb else "n")
            lines.append(f"bpg_gemm_{kind}({_c_dim(r)}, {_c_dim(c)}, {_c_dim(k)}, "
                         f"{a}, {b}, {out});")
        elif op.prim == "map":
            expr = numeric(op.attrs["expr"])
            shapes = {a: prog.vars[a].shape for a in op.args}
            flat = all(s == (r, c) or s == (1, 1) for s in shapes.values())
            access = {}
            for a, s in shapes.items():
                if s == (1, 1):
                    access[a] = f"{a}[0]"
                elif s == (r, c):
                    access[a] = f"{a}[k]"
                elif s[0] == 1:
                    access[a] = f"{a}[cc]"
                else:
                    access[a] = f"{a}[rr]"
            rhs = CPrinter(access, dtype).doprint(expr)
            if flat:
                lines.append(f"for (int64_t k = 0; k < {_c_size((r, c))}; k++) "
                             f"{out}[k] = {rhs};")
            else:
                lines += [f"for (int64_t rr = 0; rr < {_c_dim(r)}; rr++) {{",
                          f"    for (int64_t cc = 0; cc < {_c_dim(c)}; cc++) {{",
                          f"        const int64_t k = rr*{_c_dim(c)} + cc;",
                          f"        {out}[k] = {rhs};",
                          "    }", "}"]
        elif op.prim == "sum":
            (a,) = op.args
            ar, ac = prog.vars[a].shape
            axis = op.attrs["axis"]
            fn = {0: "bpg_colsum", 1: "bpg_rowsum", None: "bpg_sumall"}[axis]
            lines.append(f"{fn}({_c_dim(ar)}, {_c_dim(ac)}, {a}, {out});")
        elif op.prim == "rowmax":
            (a,) = op.args
            ar, ac = prog.vars[a].shape
            lines.append(f"bpg_rowmax({_c_dim(ar)}, {_c_dim(ac)}, {a}, {out});")
        else:
            raise ValueError(op.prim)
        return lines
    return line


def _c_function(prog: Program, dtype: str, out_storage: dict) -> dict:
    """``out_storage``: output var -> C pointer expression it is stored at."""
    decls = []
    for name, (a, b) in prog.workspace.items():
        off = " + ".join(p for p in ([f"{a}*N" if a else ""] + [str(b) if b else ""]) if p) or "0"
        decls.append(f"real *const {name} = ws + {off};  /* {_shape_str(prog.vars[name].shape)} */")
    for name, ptr in out_storage.items():
        decls.append(f"real *const {name} = {ptr};  /* {_shape_str(prog.vars[name].shape)} */")
    return {"name": prog.name, "decls": decls,
            "blocks": _blocks(prog, _c_op(prog, dtype)),
            "inputs": prog.inputs}


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# ---------------------------------------------------------------------------

def generate(spec: Spec, backend: str) -> Generated:
    """All generated files for ``spec`` and ``backend`` ("numpy" or "c")."""
    d = derive(spec)
    progs = programs(d)
    shapes = spec.param_shapes
    keys = list(shapes)
    chash = spec.content_hash()
    module = module_names(spec, backend)
    common = {
        "version": __version__,
        # the file's base name only: output must not depend on the working directory
        "source": os.path.basename(spec.source),
        "hash": chash,
        "name": spec.name,
        "module": module,
        "dtype": spec.dtype,
        "param_shapes": [(k, tuple(v)) for k, v in shapes.items()],
        "param_vars": [d.params[k] for k in keys],
        "n_params": sum(math.prod(s) for s in shapes.values()),
        "input_shape": tuple(spec.input.shape),
        "input_kind": spec.input.kind,
        "output_units": spec.output_shape[0],
        "loss_type": spec.loss.type,
        "regularised": [k for k in keys if k.rsplit(".", 1)[1] in ("W", "Wx", "Wh")],
        "fan": {k: _fans(s) for k, s in shapes.items()},
        "spec_json": json.dumps(spec.canonical(), sort_keys=True),
    }
    if backend == "numpy":
        ctx = dict(common, functions=[_numpy_function(progs[n], spec.dtype)
                                      for n in ("forward", "loss", "loss_and_grad")])
        text = _env.get_template("numpy_module.py.j2").render(**ctx)
        return Generated({f"{module}.py": text}, module)
    if backend != "c":
        raise ValueError(f"backend: expected 'numpy' or 'c', got {backend!r}")
    offsets, off = {}, 0
    for k in keys:
        offsets[k] = off
        off += math.prod(shapes[k])
    cfuncs = [
        _c_function(progs["forward"], spec.dtype, {d.output: "out_y"}),
        _c_function(progs["loss"], spec.dtype, {d.loss: "out_loss"}),
        _c_function(progs["loss_and_grad"], spec.dtype,
                    dict([(d.loss, "out_loss")] +
                         [(d.grads[k], f"out_grad + {offsets[k]}") for k in keys])),
    ]
    outs = {"forward": ["out_y"], "loss": ["out_loss"],
            "loss_and_grad": ["out_loss", "out_grad"]}
    for f in cfuncs:
        params = ["int64_t N"] + [f"const real *restrict {a}" for a in f["inputs"]]
        params += [f"real *restrict {o}" for o in outs[f["name"]]] + ["real *restrict ws"]
        f["signature"] = f"void bpg_{f['name']}({', '.join(params)})"
        f["ws"] = _c_size_pair(progs[f["name"]].workspace_size)
    ctype = "double" if spec.dtype == "float64" else "float"
    suffix = "" if spec.dtype == "float64" else "f"
    cctx = dict(common, functions=cfuncs, ctype=ctype,
                fn={n: n + suffix for n in ("exp", "log1p", "fabs")})
    c_source = _env.get_template("c_module.c.j2").render(**cctx)
    cdef = "\n".join(f"{f['signature']};" for f in cfuncs).replace("restrict ", "")
    cdef = cdef.replace("real", ctype)
    # named by the code's own hash: a changed generator never reuses a stale extension
    code_hash = hashlib.sha256((c_source + cdef).encode()).hexdigest()
    ext_name = f"_bpgen_{spec.name}_{code_hash[:12]}"
    wctx = dict(common, ext_name=ext_name, cdef=cdef, ctype=ctype,
                ws={f["name"]: f["ws"] for f in cfuncs},
                c_file=f"{module}.c")
    wrapper = _env.get_template("c_wrapper.py.j2").render(**wctx)
    return Generated({f"{module}.py": wrapper, f"{module}.c": c_source}, module,
                     c_source=c_source, cdef=cdef, ext_name=ext_name)


def _c_size_pair(ab) -> tuple:
    return tuple(ab)


def _fans(shape) -> tuple:
    if len(shape) == 2:
        return (shape[0], shape[1])
    if len(shape) > 2:   # conv kernels (out, in, k, k)
        rf = math.prod(shape[2:])
        return (shape[1] * rf, shape[0] * rf)
    return (shape[0], shape[0])
