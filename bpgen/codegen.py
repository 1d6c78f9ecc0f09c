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
from .ir import broadcast_shape, tangents
from .lower import Program, lower, size_coeffs
from .network import Derivation, derive, derive_curvature, derive_ggn
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

def hvp_program(spec: Spec) -> Program:
    """The Hessian-vector product: the R-operator (forward mode) applied to
    the forward and backward pass of the exact (untruncated) loss."""
    d = derive(spec, exact=True)
    g = d.graph
    forward_ops = list(g.ops[:d.n_forward])
    seeds = {}
    for key, p in d.params.items():
        seeds[p] = g.var("v_" + p, g.vars[p].shape, "input", "V_" + g.vars[p].label)
    t = tangents(g, seeds)
    outs = []
    for key in d.params:
        gv = d.grads[key]
        outs.append(t[gv] if gv in t else g.map(sp.Integer(0), base="r_" + gv,
                                                shape=g.vars[gv].shape))
    return lower(g, "hvp", [d.x, d.y] + list(d.params.values()) + list(seeds.values()),
                 outs, d.n_forward, forward_ops=forward_ops)


def ggn_program(spec: Spec) -> Program:
    """The generalised Gauss-Newton product, see :func:`network.derive_ggn`."""
    d, vvars, outs, forward_ops = derive_ggn(spec)
    return lower(d.graph, "ggn_vp", [d.x, d.y] + list(d.params.values()) + vvars,
                 outs, d.n_forward, forward_ops=forward_ops)


def factor_program(d: Derivation):
    """Outputs (U, V) with dW = Uᵀ·V for every weight matrix: the arguments
    of the matrix products the reverse pass forms its gradient with (a
    layer's input and its delta; over all steps for recurrent weights).
    Returns the program and {key: (u var, v var)}."""
    g = d.graph
    pairs, outs = {}, []
    for key, p in d.params.items():
        if key.rsplit(".", 1)[1] not in ("W", "Wx", "Wh"):
            continue
        for part in g.grad_parts.get(p, []):
            op = g.ops[g.producer[part]] if part in g.producer else None
            if op is not None and op.prim == "matmul" and op.attrs["ta"] and not op.attrs["tb"]:
                u, v = op.args
                if g.vars[u].role != "temp":
                    u = g.copy(u, base=f"{u}_factor")
                if g.vars[v].role != "temp":
                    v = g.copy(v, base=f"{v}_factor")
                pairs[key] = (u, v)
                outs += [w for w in (u, v) if w not in outs]
    prog = lower(g, "grad_factors", [d.x, d.y] + list(d.params.values()), outs, d.n_forward)
    return prog, pairs


def structured(spec: Spec) -> bool:
    """True when the Hessian is assembled from its Kronecker block structure:
    networks of dense (and flatten) layers on feature or image inputs."""
    return (spec.input.kind != "sequence"
            and all(lay.type in ("dense", "flatten") for lay in spec.layers))


def curvature_program(spec: Spec):
    """The per-sample quantities the structured Hessian is assembled from
    (see :func:`network.derive_curvature`) and their layout for the wrapper."""
    d, layers, curv, outs = derive_curvature(spec)
    prog = lower(d.graph, "curvature", [d.x, d.y] + list(d.params.values()), outs,
                 d.n_forward)
    info = [(f"{lay.name}.W", f"{lay.name}.b", ix["in"], ix["d1"], ix["d2"], ix["q"],
             ix["delta"]) for lay, ix in layers]
    return prog, info, curv


def _output_layout(variables: dict, outs, pointer: str):
    """Flat-buffer layout of outputs whose sizes are a*N + b."""
    sizes, storage, fa, fb = [], {}, 0, 0
    for o in outs:
        a, b = size_coeffs(variables[o].shape)
        storage[o] = f"{pointer} + {fa}*N + {fb}"
        sizes.append((fa, fb, a, b, variables[o].shape[1]))
        fa, fb = fa + a, fb + b
    return sizes, storage


def programs(d: Derivation) -> dict:
    """The entry points as lowered programs."""
    g = d.graph
    pv = list(d.params.values())
    return {
        "hvp": hvp_program(d.spec),
        "ggn_vp": ggn_program(d.spec),
        "forward": lower(g, "forward", [d.x] + pv, [d.output], d.n_forward),
        "loss": lower(g, "loss", [d.x, d.y] + pv, [d.loss], d.n_forward),
        "loss_and_grad": lower(g, "loss_and_grad", [d.x, d.y] + pv,
                               [d.loss] + list(d.grads.values()), d.n_forward),
    }


def _dim(d) -> str:
    """A dimension as code (the same in Python and C): 5, N or 3*N."""
    return str(d)


def _head(prog: Program, key, first: bool, backward: bool = True) -> list:
    if key is None:
        if not backward:
            return ["forward pass"] if first else ["forward pass (continued)"]
        return ["total gradients"]
    fop = prog.forward_ops[key]
    head = [f"Grad of: {op_equation(fop)}"]
    if fop.comment:
        head.append(f"  ({fop.comment})")
    return head


def _blocks(prog: Program, emitter) -> list:
    """Ops grouped into commented blocks: the forward pass, then one block per
    forward op that the backward pass differentiates.  A loop is one block
    whose lines hold the loop and, indented, its own commented blocks."""
    blocks, current_key = [], object()
    ops, i = prog.ops, 0
    while i < len(ops):
        op = ops[i]
        backward = any(o.grad_of is not None for o in ops[:i + 1])
        if op.loop is None:
            if op.grad_of != current_key:
                blocks.append({"head": _head(prog, op.grad_of, not blocks, backward),
                               "lines": []})
                current_key = op.grad_of
            blocks[-1]["lines"].extend(emitter.op(op, None))
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
                lines += [emitter.comment(h) for h in _head(prog, lop.grad_of, False, backward)]
            lines += emitter.op(lop, op.loop)
        defined = [o.out for o in ops[i:j]]
        body = emitter.loop(op.loop, info, defined, lines)
        blocks.append({"head": [f"loop over time steps: {info['title']}"], "lines": body})
        current_key = object()
        i = j
    return blocks


def _is_backward(op) -> bool:
    return op.grad_of is not None


class _Emitter:
    """What both languages share: where a variable lives inside a loop."""

    def __init__(self, prog: Program, dtype: str):
        self.prog, self.dtype = prog, dtype

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

    def heads(self, op) -> list:
        lines = []
        if op.comment and not _is_backward(op):
            lines.append(self.comment(op.comment))
        return lines


# ---------------------------------------------------------------------------
# NumPy

class _NumpyEmitter(_Emitter):
    def comment(self, text: str) -> str:
        return f"# {text}"

    def acc(self, name: str, loop) -> str:
        return f"{name}[r0:r1]" if self.stepped(name, loop) else name

    def op(self, op, loop) -> list:
        out = op.out
        shape = self.shape(out, loop)
        acc = lambda n: self.acc(n, loop)  # noqa: E731
        eq = op_equation(op)
        lines = self.heads(op)
        if op.prim == "matmul":
            a, b = op.args
            rhs = (f"{acc(a)}{'.T' if op.attrs['ta'] else ''} @ "
                   f"{acc(b)}{'.T' if op.attrs['tb'] else ''}")
        elif op.prim == "map":
            expr = numeric(op.attrs["expr"])
            rhs = NumpyPrinter({}, {a: acc(a) for a in op.args}).doprint(expr)
            arg_shapes = [self.shape(a, loop) for a in op.args]
            if not arg_shapes or broadcast_shape(arg_shapes) != shape:
                rhs = f"_full({rhs}, ({_dim(shape[0])}, {_dim(shape[1])}))"
        elif op.prim == "sum":
            axis = op.attrs["axis"]
            src = acc(op.args[0])
            rhs = (f"{src}.sum(keepdims=True)" if axis is None
                   else f"{src}.sum(axis={axis}, keepdims=True)")
        elif op.prim == "rowmax":
            rhs = f"{acc(op.args[0])}.max(axis=1, keepdims=True)"
        elif op.prim == "cols":
            rhs = f"{acc(op.args[0])}[:, {op.attrs['start']}:{op.attrs['stop']}]"
        elif op.prim == "place_cols":
            rhs = f"_place_cols({acc(op.args[0])}, {op.attrs['start']}, {op.attrs['total']})"
        elif op.prim == "concat":
            rhs = f"numpy.concatenate([{', '.join(acc(a) for a in op.args)}], axis=1)"
        elif op.prim == "rows":
            blk = op.attrs["block"]
            rhs = f"{acc(op.args[0])}[{blk}*N:{blk + 1}*N]"
        elif op.prim == "place_rows":
            rhs = f"_place_rows({acc(op.args[0])}, {op.attrs['block']}, {op.attrs['steps']})"
        elif op.prim == "prev":
            (src,) = op.args
            lines.append(self.comment(eq))
            zero = (f"{acc(out)} = 0" if self.stepped(out, loop)
                    else f"{out} = numpy.zeros((N, {shape[1]}), dtype=DTYPE)")
            return lines + ["if it == 0:", f"    {zero}", "else:",
                            f"    {acc(out)} = {src}[q0:q1]"]
        elif op.prim == "cut":
            (a,) = op.args
            steps = self.prog.loops[loop]["steps"]
            fwd = f"{steps - 1} - t" if op.attrs["forward_reverse"] else "t"
            lines.append(self.comment(eq))
            return lines + [f"{acc(out)} = 0 * {acc(a)} if ({fwd}) % {op.attrs['every']} == 0 "
                            f"else {acc(a)}"]
        else:
            raise ValueError(op.prim)
        code = f"{acc(out)} = {rhs}"
        if eq.replace(" ", "") != code.replace(" ", ""):
            lines.append(self.comment(eq))
        lines.append(code)
        return lines

    def loop(self, lid, info, defined, body) -> list:
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


def _numpy_function(prog: Program, dtype: str) -> dict:
    # outputs defined in a loop are written step by step: allocate them first
    pre = [f"{o} = numpy.empty(({prog.vars[o].shape[0]}, {prog.vars[o].shape[1]}), "
           f"dtype=DTYPE)" for o in prog.outputs if prog.vars[o].loop is not None]
    return {"name": prog.name, "args": prog.inputs, "returns": prog.outputs,
            "pre": pre, "blocks": _blocks(prog, _NumpyEmitter(prog, dtype))}


# ---------------------------------------------------------------------------
# C

def _c_size(shape) -> str:
    a, b = size_coeffs(shape)
    if a and b:
        return f"{a}*N + {b}"
    if a:
        return "N" if a == 1 else f"{a}*N"
    return str(b)


class _CEmitter(_Emitter):
    def comment(self, text: str) -> str:
        return f"/* {text} */"

    def ptr(self, name: str, loop) -> str:
        if self.stepped(name, loop):
            return f"({name} + t*{self.prog.vars[name].shape[1]}*N)"
        return name

    def op(self, op, loop) -> list:
        out = op.out
        r, c = self.shape(out, loop)
        ptr = lambda n: self.ptr(n, loop)  # noqa: E731
        lines = self.heads(op)
        lines.append(self.comment(op_equation(op)))
        size = f"sizeof(real)*(size_t)({_c_size((r, c))})"
        if op.prim == "matmul":
            a, b = op.args
            ta, tb = op.attrs["ta"], op.attrs["tb"]
            sa = self.shape(a, loop)
            k = sa[0] if ta else sa[1]
            kind = ("t" if ta else "n") + ("t" if tb else "n")
            lines.append(f"bpg_gemm_{kind}({_dim(r)}, {_dim(c)}, {_dim(k)}, "
                         f"{ptr(a)}, {ptr(b)}, {ptr(out)});")
        elif op.prim == "map":
            expr = numeric(op.attrs["expr"])
            shapes = {a: self.shape(a, loop) for a in op.args}
            flat = all(sh == (r, c) or sh == (1, 1) for sh in shapes.values())
            access = {}
            for a, sh in shapes.items():
                p = ptr(a)
                if sh == (1, 1):
                    access[a] = f"{p}[0]"
                elif sh == (r, c):
                    access[a] = f"{p}[k]"
                elif sh[0] == 1:
                    access[a] = f"{p}[cc]"
                else:
                    access[a] = f"{p}[rr]"
            rhs = CPrinter(access, self.dtype).doprint(expr)
            dst = ptr(out)
            if flat:
                lines.append(f"for (int64_t k = 0; k < {_c_size((r, c))}; k++) "
                             f"{dst}[k] = {rhs};")
            else:
                lines += [f"for (int64_t rr = 0; rr < {_dim(r)}; rr++) {{",
                          f"    for (int64_t cc = 0; cc < {_dim(c)}; cc++) {{",
                          f"        const int64_t k = rr*{_dim(c)} + cc;",
                          f"        {dst}[k] = {rhs};",
                          "    }", "}"]
        elif op.prim in ("sum", "rowmax"):
            (a,) = op.args
            ar, ac = self.shape(a, loop)
            fn = ("bpg_rowmax" if op.prim == "rowmax" else
                  {0: "bpg_colsum", 1: "bpg_rowsum", None: "bpg_sumall"}[op.attrs["axis"]])
            lines.append(f"{fn}({_dim(ar)}, {_dim(ac)}, {ptr(a)}, {ptr(out)});")
        elif op.prim == "cols":
            (a,) = op.args
            lines.append(f"bpg_copy_cols({_dim(r)}, {c}, {ptr(a)}, {self.shape(a, loop)[1]}, "
                         f"{op.attrs['start']}, {ptr(out)}, {c}, 0);")
        elif op.prim == "place_cols":
            (a,) = op.args
            lines.append(f"memset({ptr(out)}, 0, {size});")
            lines.append(f"bpg_copy_cols({_dim(r)}, {self.shape(a, loop)[1]}, {ptr(a)}, "
                         f"{self.shape(a, loop)[1]}, 0, {ptr(out)}, {c}, {op.attrs['start']});")
        elif op.prim == "concat":
            pos = 0
            for a in op.args:
                w = self.shape(a, loop)[1]
                lines.append(f"bpg_copy_cols({_dim(r)}, {w}, {ptr(a)}, {w}, 0, "
                             f"{ptr(out)}, {c}, {pos});")
                pos += w
        elif op.prim == "rows":
            (a,) = op.args
            lines.append(f"memcpy({ptr(out)}, {a} + {op.attrs['block']}*{c}*N, {size});")
        elif op.prim == "place_rows":
            (a,) = op.args
            lines.append(f"memset({out}, 0, sizeof(real)*(size_t)({_c_size((self.prog.vars[out].shape))}));")
            lines.append(f"memcpy({out} + {op.attrs['block']}*{c}*N, {ptr(a)}, "
                         f"sizeof(real)*(size_t)({c}*N));")
        elif op.prim == "prev":
            (src,) = op.args
            lines += [f"if (it == 0) memset({ptr(out)}, 0, {size});",
                      f"else memcpy({ptr(out)}, {src} + q*{c}*N, {size});"]
        elif op.prim == "cut":
            (a,) = op.args
            steps = self.prog.loops[loop]["steps"]
            fwd = f"{steps - 1} - t" if op.attrs["forward_reverse"] else "t"
            lines += [f"if (({fwd}) % {op.attrs['every']} == 0) memset({ptr(out)}, 0, {size});",
                      f"else memcpy({ptr(out)}, {ptr(a)}, {size});"]
        else:
            raise ValueError(op.prim)
        return lines

    def loop(self, lid, info, defined, body) -> list:
        steps = info["steps"]
        lines = [f"for (int64_t it = 0; it < {steps}; it++) {{",
                 f"    const int64_t t = {steps - 1} - it;" if info["reverse"]
                 else "    const int64_t t = it;",
                 "    const int64_t q = " + ("t + 1" if info["reverse"] else "t - 1")
                 + ";  /* the previous iteration's step */",
                 "    (void)q;"]
        lines += [("    " + line) if line else "" for line in body]
        lines.append("}")
        return lines


def _c_function(prog: Program, dtype: str, out_storage: dict) -> dict:
    """``out_storage``: output var -> C pointer expression it is stored at."""
    decls = []
    for name, (a, b) in prog.workspace.items():
        off = " + ".join(p for p in ([f"{a}*N" if a else ""] + [str(b) if b else ""]) if p) or "0"
        shape = prog.vars[name].shape
        if name in prog.step_vars:
            shape = ("N", shape[1])
        decls.append(f"real *const {name} = ws + {off};  /* {_shape_str(shape)} */")
    for name, ptr in out_storage.items():
        decls.append(f"real *const {name} = {ptr};  /* {_shape_str(prog.vars[name].shape)} */")
    return {"name": prog.name, "decls": decls,
            "blocks": _blocks(prog, _CEmitter(prog, dtype)),
            "inputs": prog.inputs}


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# ---------------------------------------------------------------------------

def generate(spec: Spec, backend: str) -> Generated:
    """All generated files for ``spec`` and ``backend`` ("numpy" or "c")."""
    d = derive(spec)
    progs = programs(d)
    progs["grad_factors"], pairs = factor_program(d)
    fouts = progs["grad_factors"].outputs
    factor_index = {k: (fouts.index(u), fouts.index(v)) for k, (u, v) in pairs.items()}
    factor_sizes, factor_storage = _output_layout(d.graph.vars, fouts, "out_f")
    curv_layers, curv_loss, curv_sizes, curv_storage = [], None, [], {}
    if structured(spec):
        progs["curvature"], curv_layers, curv_loss = curvature_program(spec)
        cprog = progs["curvature"]
        curv_sizes, curv_storage = _output_layout(cprog.vars, cprog.outputs, "out_f")
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
        "output_units": spec.output_shape[-1],
        "seq_out": spec.input.kind == "sequence" and len(spec.output_shape) == 2,
        "loss_all_steps": (spec.input.kind == "sequence" and len(spec.output_shape) == 2
                           and spec.loss.steps == "all"),
        "loss_type": spec.loss.type,
        "regularised": [k for k in keys if k.rsplit(".", 1)[1] in ("W", "Wx", "Wh")],
        "fan": {k: _fans(s) for k, s in shapes.items()},
        "spec_json": json.dumps(spec.canonical(), sort_keys=True),
        "steps": spec.input.shape[0] if spec.input.kind == "sequence" else None,
        "loss_steps": spec.loss.steps,
        "batch_expr": ("x.shape[0]" if spec.input.kind != "sequence"
                       else f"x.shape[0] // {spec.input.shape[0]}"),
        "factor_index": factor_index,
        "l2": repr(float(spec.l2)),
        "factor_sizes": factor_sizes,
        "curv_layers": curv_layers,
        "curv_loss": curv_loss,
        "curv_sizes": curv_sizes,
    }
    if backend == "numpy":
        ctx = dict(common, functions=[_numpy_function(progs[n], spec.dtype)
                                      for n in ("forward", "loss", "loss_and_grad", "hvp",
                                                "ggn_vp", "grad_factors", "curvature")
                                      if n in progs])
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
        _c_function(progs["hvp"], spec.dtype,
                    {o: f"out_hv + {offsets[k]}" for k, o in zip(keys, progs["hvp"].outputs)}),
        _c_function(progs["ggn_vp"], spec.dtype,
                    {o: f"out_hv + {offsets[k]}"
                     for k, o in zip(keys, progs["ggn_vp"].outputs)}),
        _c_function(progs["grad_factors"], spec.dtype, factor_storage),
    ]
    if "curvature" in progs:
        cfuncs.append(_c_function(progs["curvature"], spec.dtype, curv_storage))
    outs = {"forward": ["out_y"], "loss": ["out_loss"],
            "loss_and_grad": ["out_loss", "out_grad"], "hvp": ["out_hv"],
            "ggn_vp": ["out_hv"], "grad_factors": ["out_f"], "curvature": ["out_f"]}
    for f in cfuncs:
        params = ["int64_t N"] + [f"const real *restrict {a}" for a in f["inputs"]]
        params += [f"real *restrict {o}" for o in outs[f["name"]]] + ["real *restrict ws"]
        f["signature"] = f"void bpg_{f['name']}({', '.join(params)})"
        f["ws"] = tuple(progs[f["name"]].workspace_size)
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


def _fans(shape) -> tuple:
    if len(shape) == 2:
        return (shape[0], shape[1])
    if len(shape) > 2:   # conv kernels (out, in, k, k)
        rf = math.prod(shape[2:])
        return (shape[1] * rf, shape[0] * rf)
    return (shape[0], shape[0])
