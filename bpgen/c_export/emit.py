"""The files of an exported network: ``NAME.h``, ``NAME.c``, ``Makefile``,
``example.c``.

The generated functions are the C backend's own (``backends/c/emitter.py``
prints them, static here); around each exported function a short wrapper
takes the Python API's arrays (batch-first x, labels, lengths, the flat
parameter vector), checks what could send the code out of bounds, converts
(``runtime/convert.c``) and calls it.  Every size the header prints comes
from :class:`Layout`, whose numbers are the emitted functions' own
(``f["ws"]``, the same the Python module's wrapper allocates) and the
derived output layouts; ``bpgen.export`` returns the same object.
"""
from __future__ import annotations

import math
import os
import re
import textwrap
from dataclasses import dataclass, field

from .. import __version__
from ..backends.c.columns import columns_function
from ..backends.c.emitter import HELPERS, _function, _table_lines
from ..backends.common.context import _printable
from ..backends.common.emitter import environment, runtime_source
from ..derivation import Derived
from ..losses import LOSSES

__all__ = ["FUNCTIONS", "DEFAULT_FUNCTIONS", "Layout", "check_prefix", "emit_export"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_C_RUNTIME = os.path.join(_HERE, "..", "backends", "c", "runtime")
_env = environment(_HERE)

#: the functions an export may hold, in the header's order
FUNCTIONS = ("forward", "loss", "loss_and_grad", "hvp", "ggn_vp", "hessian")
DEFAULT_FUNCTIONS = ("forward", "loss", "loss_and_grad", "hvp")
#: first-derivative functions of a direction v (a flat vector like the parameters)
_VP = ("hvp", "ggn_vp")
#: the Hessian's directions per tangent pass (bpg_hessian_columns' kc), at
#: most: the module's HESSIAN_CHUNK (runtime/call.py) picks 1-64 per call
#: from the batch; a fixed count keeps the workspace a*n + b
HESSIAN_CHUNK = 8

_C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum
extern float for goto if inline int long register restrict return short signed sizeof
static struct switch typedef union unsigned void volatile while _Bool _Complex
_Imaginary""".split())
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_prefix(prefix, default: str | None = None) -> str:
    """``prefix`` (or ``default``, the architecture's name) if it is a C
    identifier that can prefix every exported name; else a ValueError
    naming ``prefix``."""
    what = "prefix"
    if prefix is None:
        prefix, what = default, f"prefix (default: the architecture's name {default!r})"
    if not isinstance(prefix, str):
        raise ValueError(f"prefix: expected a C identifier (a str), got "
                         f"{type(prefix).__name__}")
    if not _IDENT.match(prefix):
        raise ValueError(f"{what}: {prefix!r} is not a C identifier (letters, digits and "
                         f"'_', not starting with a digit)")
    if prefix in _C_KEYWORDS:
        raise ValueError(f"{what}: {prefix!r} is a C keyword")
    if len(prefix) > 40:
        raise ValueError(f"{what}: {prefix!r} is longer than 40 characters")
    if prefix.startswith("__") or (prefix[0] == "_" and prefix[1:2].isupper()):
        raise ValueError(f"{what}: {prefix!r} is reserved in C (a leading '__' or '_' and "
                         f"a capital)")
    if prefix.lower().startswith(("bpg_", "bpgx_", "bpgf_", "bpgs_")) or prefix.lower() in (
            "bpg", "bpgx", "bpgf", "bpgs"):
        raise ValueError(f"{what}: {prefix!r} is bpgen's own internal prefix")
    return prefix


def _round64(b: int) -> int:
    return (b + 63) // 64 * 64


@dataclass(frozen=True)
class Region:
    """One part of a call's workspace: ``a`` bytes a sample plus ``b``."""
    var: str
    ctype: str
    a: int
    b: int
    what: str

    def bytes(self, n: int) -> int:
        return _round64(self.a * n + self.b)


@dataclass
class Layout:
    """The sizes of an exported network, as its header prints them."""
    prefix: str
    dtype: str
    n_params: int
    #: key -> (offset, size, shape), the flatten order
    params: dict
    #: function -> its workspace regions, in order from ``work``
    regions: dict = field(default_factory=dict)
    max_batch: int = 1
    #: the files written (bpgen.export)
    paths: list = field(default_factory=list)

    @property
    def functions(self) -> tuple:
        return tuple(self.regions)

    def work_bytes(self, n: int, function: str | None = None) -> int:
        """NAME_<FUNCTION>_WORK_BYTES(n), or NAME_WORK_BYTES(n) (the most any
        exported function needs) when ``function`` is None."""
        if function is None:
            return max(self.work_bytes(n, f) for f in self.regions)
        if function not in self.regions:
            raise ValueError(f"function: {function!r} is not exported (exported: "
                             f"{', '.join(self.regions)})")
        return sum(r.bytes(n) for r in self.regions[function])

    @property
    def max_work_bytes(self) -> int:
        return self.work_bytes(self.max_batch)


def _param_macro(prefix: str, key: str) -> str:
    return f"{prefix}_{key.replace('.', '_')}"


def _check_functions(functions, derived: Derived) -> tuple:
    if functions is None:
        functions = DEFAULT_FUNCTIONS
    if isinstance(functions, str):
        functions = [f.strip() for f in functions.split(",") if f.strip()]
    functions = tuple(functions)
    if not functions:
        raise ValueError("functions: expected at least one function")
    for f in functions:
        if f not in FUNCTIONS:
            raise ValueError(f"functions: unknown function {f!r} (expected some of: "
                             f"{', '.join(FUNCTIONS)})")
    if len(set(functions)) != len(functions):
        raise ValueError(f"functions: {', '.join(functions)} names a function twice")
    for f in functions:
        entry = derived.entries.get("hessian_columns" if f == "hessian" else f)
        if entry is None or "c" not in entry.backends or (
                f != "hessian" and f not in derived.programs):
            raise ValueError(f"functions: {f!r} has no C function for {derived.spec.name}")
    return tuple(f for f in FUNCTIONS if f in functions)


class _Network:
    """The facts of the network the wrappers need, decided once."""

    def __init__(self, derived: Derived, prefix: str):
        spec = derived.spec
        self.derived, self.spec, self.prefix = derived, spec, prefix
        self.itemsize = 4 if spec.dtype == "float32" else 8
        self.inp = spec.input
        if self.inp.is_sequence and not isinstance(self.inp.steps, int):
            raise ValueError(f"{spec.source}: input.steps: an export needs a fixed number of "
                             f"steps, got {self.inp.steps!r}")
        self.seq = self.inp.is_sequence
        self.T = self.inp.steps if self.seq else 1
        self.in_size = math.prod(self.inp.shape)
        self.F = self.in_size // self.T                 # x's elements per (sample, step)
        self.x_item = 8 if self.inp.x_dtype == "int64" else (
            self.itemsize if self.inp.x_dtype is None else None)
        if self.x_item is None:
            raise ValueError(f"{spec.source}: input: x of dtype {self.inp.x_dtype} cannot be "
                             f"exported yet")
        self.K = spec.output_shape[-1]
        self.seq_out = self.seq and len(spec.output_shape) == 2
        self.all_steps = self.seq_out and spec.loss.steps == "all"
        self.Ty = self.T if self.all_steps else 1        # y's steps
        self.labels = LOSSES[spec.loss.type].target_kind == "labels"
        self.n_masks = len(derived.base.masks)
        self.truncate = spec.truncate if (self.seq and self.n_masks == 2) else 0
        self.params = {}
        off = 0
        for key, shape in spec.param_shapes.items():
            size = math.prod(shape)
            self.params[key] = (off, size, tuple(shape))
            off += size
        self.n_params = off
        macros = [_param_macro(prefix, k).upper() for k in self.params]
        if len(set(macros)) != len(macros):
            raise ValueError(f"{spec.source}: layers: parameter names that differ only in "
                             f"case or '.'/'_' cannot all be exported as macros")

    # ---- one wrapper ----

    def regions(self, fn: str, ws: tuple) -> list:
        it = self.itemsize
        out = []
        if self.seq:
            out.append(Region("xt", "bpgx_x_t", self.T * self.F * self.x_item, 0,
                              "x time-major"))
            out.append(Region("mask", "real", self.n_masks * self.T * it, 0,
                              "the masks from the lengths"))
        if fn != "forward" and (self.labels or self.all_steps):
            out.append(Region("yt", "real", self.Ty * self.K * it, 0,
                              "y one-hot" if self.labels else "y time-major"))
        if (fn == "forward" and self.seq_out) or fn == "loss_and_grad":
            layout = self.derived.layout(fn)
            oa = sum(a for _, _, a, _, _ in layout)
            ob = sum(b for _, _, _, b, _ in layout)
            out.append(Region("out_", "real", oa * it, ob * it, "the function's outputs"))
        out.append(Region("ws_", "real", ws[0] * it, ws[1] * it, "the function's workspace"))
        return out

    def hessian_chunk(self, ws_dir: tuple) -> int:
        """Directions per tangent pass of the exported hessian: 1 when the
        tangent part runs one direction at a time (no per-direction
        workspace), else up to HESSIAN_CHUNK."""
        return min(HESSIAN_CHUNK, self.n_params) if any(ws_dir) else 1

    def _check_layout(self, fn: str) -> None:
        """The generated function's outputs are where the wrapper reads them."""
        if fn == "hessian":         # bpg_hessian_columns: count rows of N_PARAMS from 0
            return
        layout = [tuple(o[:4]) for o in self.derived.layout(fn)]
        sizes = [s for _, s, _ in self.params.values()]
        if fn == "forward":
            rows = self.T if self.seq_out else 1
            want = [(0, 0, rows * self.K, 0)]
        elif fn == "loss":
            want = [(0, 0, 0, 1)]
        else:
            sizes = ([1] if fn == "loss_and_grad" else []) + sizes
            offs = [sum(sizes[:i]) for i in range(len(sizes))]
            want = [(0, o, 0, s) for o, s in zip(offs, sizes)]
        if layout != want:
            raise AssertionError(f"export: {fn}'s outputs are laid out as {layout}, "
                                 f"expected {want}")

    def signature(self, fn: str) -> tuple:
        """(C parameter list, documentation lines) of NAME_<fn>."""
        p, r = self.prefix, f"{self.prefix}_real"
        args = [f"const {r} *params", "int64_t n", f"const {p}_x_t *x"]
        if self.seq:
            args.append("const int32_t *lengths")
        if fn != "forward":
            args.append(f"const {p}_y_t *y")
        if fn in _VP:
            args.append(f"const {r} *v")
        outs = {"forward": [f"{r} *out"], "loss": [f"{r} *loss"],
                "loss_and_grad": [f"{r} *loss", f"{r} *grad"], "hvp": [f"{r} *hv"],
                "ggn_vp": [f"{r} *gv"], "hessian": [f"{r} *H"]}[fn]
        args += outs + ["void *work", "size_t work_bytes"]
        what = {
            "forward": f"the network's output before the loss into out "
                       f"({p}_OUTPUT_SIZE(n) elements{', 0 at padded steps' if self.seq_out else ''})",
            "loss": "the loss (the mean over the batch, l2 included) into *loss",
            "loss_and_grad": f"the loss into *loss and its gradient into grad "
                             f"({p}_N_PARAMS elements){', truncated BPTT' if self.truncate else ''}",
            "hvp": f"the exact Hessian of the loss times v into hv ({p}_N_PARAMS elements)",
            "ggn_vp": f"the Gauss-Newton matrix times v into gv ({p}_N_PARAMS elements)",
            "hessian": f"the exact Hessian of the loss into H ({p}_N_PARAMS x {p}_N_PARAMS, "
                       f"row-major; H[i*{p}_N_PARAMS + j] = d2 loss / d theta_i d theta_j "
                       f"in the flat order), from one forward and backward pass and "
                       f"Hessian-vector products of the unit vectors",
        }[fn]
        doc = [f"{p}_{fn}: {what}.",
               f"Workspace: {p}_{fn.upper()}_WORK_BYTES(n) bytes."]
        if self.seq:
            doc.append("lengths: n lengths in [1, T] (steps from lengths[i] on are padding), "
                       "or NULL: every step real.")
        return args, doc

    def body(self, fn: str, regions: list, kc: int = 1) -> list:
        p = self.prefix
        ptrs = ["params", "x"] + (["y"] if fn != "forward" else []) + (
            ["v"] if fn in _VP else []) + {"forward": ["out"], "loss": ["loss"],
                                           "loss_and_grad": ["loss", "grad"],
                                           "hvp": ["hv"], "ggn_vp": ["gv"],
                                           "hessian": ["H"]}[fn]
        per = sum(r.a for r in regions)
        fixed = sum(r.b + 63 for r in regions)
        lines = [f"if (n < 1 || bpgx_too_large(n, {per}u, {fixed}u))",
                 f"    return {p}_ERR_BATCH;",
                 f"if ({' || '.join('!' + q for q in ptrs)})",
                 f"    return {p}_ERR_NULL;",
                 f"if (!work || (uintptr_t)work % 8 != 0 "
                 f"|| work_bytes < {p}_{fn.upper()}_WORK_BYTES(n))",
                 f"    return {p}_ERR_WORK;"]
        checks = []
        if self.inp.x_dtype is not None:
            checks.append(f"!bpgx_tokens_ok(x, n * {self.in_size}, {self.inp.bound})")
        if self.seq:
            checks.append(f"lengths && !bpgx_lengths_ok(lengths, n, {self.T})")
        if fn != "forward" and self.labels:
            checks.append(f"!bpgx_labels_ok(y, n * {self.Ty}, {self.K})")
        if len(checks) > 1:
            checks = [f"({c})" if "&&" in c else c for c in checks]
        if checks:
            lines += [f"if ({' || '.join(checks)})", f"    return {p}_ERR_INPUT;"]
        lines += ["{", "    unsigned char *at = (unsigned char *)work;"]
        for r in regions:
            size = f"{p}_ROUND64({_linear(r.a, r.b, 'n')})"
            lines += [f"    {r.ctype} *const {r.var} = ({r.ctype} *)at;  /* {r.what} */",
                      f"    at += {size};"]
        lines += ["    (void)at;"]
        body = []
        if self.seq:
            cut = "mask + " + f"{self.T}*n" if self.truncate else "NULL"
            body += [f"bpgx_x_time_major(x, n, {self.T}, {self.F}, xt);",
                     f"bpgx_masks(lengths, n, {self.T}, {self.truncate}, mask, {cut});"]
        ys = "y"
        if fn != "forward" and self.labels:
            body.append(f"bpgx_one_hot(y, n, {self.Ty}, {self.K}, yt);")
            ys = "yt"
        elif fn != "forward" and self.all_steps:
            body.append(f"bpgx_time_major(y, n, {self.T}, {self.K}, yt);")
            ys = "yt"
        args = ["n", "xt" if self.seq else "x"]
        args += ["mask", f"mask + {self.T}*n"][:self.n_masks]
        if fn != "forward":
            args.append(ys)
        args += [f"params + {_param_macro(p, key)}_OFFSET" for key in self.params]
        if fn in _VP:
            args += [f"v + {_param_macro(p, key)}_OFFSET" for key in self.params]
        if fn == "hessian":         # rows 0 .. N_PARAMS-1: H·e_j, kc directions a pass
            cols = self.derived.columns
            n_in = len(cols.program.inputs) - len(cols.directions)
            if len(args) - 1 != n_in:
                raise AssertionError(f"export: hessian_columns takes "
                                     f"{cols.program.inputs[:n_in]}, the wrapper passes {args[1:]}")
            body += _wrap_call("bpg_hessian_columns(", args + [
                "NULL", "H", "ws_", "0", f"{p}_N_PARAMS", str(kc)]).split("\n")
            body[-1] += ";"
        else:
            out = {"forward": "out_" if self.seq_out else "out", "loss": "loss",
                   "loss_and_grad": "out_", "hvp": "hv", "ggn_vp": "gv"}[fn]
            prog = self.derived.programs[fn]
            if len(args) - 1 != len(prog.inputs):
                raise AssertionError(f"export: {fn} takes {prog.inputs}, the wrapper passes "
                                     f"{args[1:]}")
            body += _wrap_call(f"bpg_{fn}(", args + [out, "ws_"]).split("\n")
            body[-1] += ";"
        if fn == "forward" and self.seq_out:
            body.append(f"bpgx_batch_first(out_, mask, n, {self.T}, {self.K}, out);")
        if fn == "loss_and_grad":
            body += ["*loss = out_[0];",
                     f"memcpy(grad, out_ + 1, (size_t){p}_N_PARAMS * sizeof *grad);"]
        lines += ["    " + b for b in body] + ["}", f"return {p}_OK;"]
        return lines


def _convert_source(bodies: str) -> str:
    """runtime/convert.c: its head and the functions ``bodies`` call (one
    function with its comment per paragraph)."""
    head, *pieces = runtime_source(os.path.join(_HERE, "runtime", "convert.c")).split("\n\n")
    keep = []
    for piece in pieces:
        name = re.search(r"\b(bpgx_\w+)\(", piece)
        if name is None:
            raise AssertionError(f"runtime/convert.c: a paragraph without a function: {piece!r}")
        if name.group(1) + "(" in bodies:
            keep.append(piece)
    return "\n\n".join([head] + keep)


def _used(f: dict) -> dict:
    """The generated function ``f`` with every parameter and workspace
    pointer marked used (``(void)name;``): a strict compilation (-Wall
    -Wextra -Werror) must not stop at one a network does not read (the
    module's build turns those warnings off instead)."""
    params = re.findall(r"(\w+)(?:,|\)$)", f["signature"])
    local = [m.group(1) for d in f["decls"] for m in [re.search(r"\*const (\w+) =", d)] if m]
    lines, line = ["/* not every one is read */"], ""
    for name in params + local:
        if line and len(line) + len(name) > 90:
            lines.append(line.rstrip())
            line = ""
        line += f"(void){name}; "
    # and the hessian_columns loop's flags of nonzero direction blocks
    blocks = [{**b, "lines": [re.sub(r"^(\s*const int (vnz_\w+) = .*;)$", r"\1 (void)\2;", ln)
                              for ln in b["lines"]]} for b in f["blocks"]]
    return {**f, "decls": f["decls"] + lines + [line.rstrip()], "blocks": blocks}


def _omp(text: str) -> str:
    """The loops' ``#pragma omp ...`` lines as BPG_OMP(...) (runtime/prelude.c
    of the export: pragmas only when asked for)."""
    return re.sub(r"^([ \t]*)#pragma (omp [^\n]*)$", r"\1BPG_OMP(\2)", text, flags=re.M)


def emit_export(derived: Derived, prefix: str, functions=None, max_batch: int = 1) -> tuple:
    """({file name: text}, :class:`Layout`) of the export of ``derived``."""
    spec = derived.spec
    functions = _check_functions(functions, derived)
    net = _Network(derived, prefix)
    used: set = set()
    tables: dict = {}
    cores = [_used(columns_function(derived, used, tables) if fn == "hessian"
                   # no products added into maps (the export's kernel has no β), large
                   # im2col patches kept whole
                   else _function(derived, fn, used, tables, accumulate=False, chunk=False))
             for fn in functions]
    layout = Layout(prefix=prefix, dtype=spec.dtype, n_params=net.n_params, params=net.params,
                    max_batch=max_batch)
    wrappers, prototypes, work_macros = [], [], []
    for fn, f in zip(functions, cores):
        net._check_layout(fn)
        kc = net.hessian_chunk(f.get("ws_dir", (0, 0))) if fn == "hessian" else 1
        ws = f["ws"]
        if fn == "hessian":         # and kc directions' tangents after it
            ws = (ws[0] + kc * f["ws_dir"][0], ws[1] + kc * f["ws_dir"][1])
        regions = net.regions(fn, ws)
        layout.regions[fn] = regions
        args, doc = net.signature(fn)
        prototypes.append({"prototype": _wrap_call(f"int {prefix}_{fn}(", args),
                           "doc": _wrap_doc(doc)})
        wrappers.append({"signature": _wrap_call(f"int {prefix}_{fn}(", args),
                         "body": net.body(fn, regions, kc)})
        terms = [f"{prefix}_ROUND64({_linear(r.a, r.b)})" for r in regions if r.a or r.b]
        work_macros.append({"name": f"{prefix}_{fn.upper()}_WORK_BYTES",
                            "value": "(" + " \\\n    + ".join(terms or ["(size_t)0"]) + ")",
                            "regions": ", ".join(r.what for r in regions if r.a or r.b)})
    work_all = f"{work_macros[-1]['name']}(n)"
    for w in reversed(work_macros[:-1]):
        work_all = f"{prefix}_MAX2({w['name']}(n), \\\n    {work_all})"
    # NAME_work_bytes: the largest function's, 0 when some would not fit
    too_large = " ||\n        ".join(f"bpgx_too_large(n, {sum(r.a for r in rs)}u, "
                                     f"{sum(r.b + 63 for r in rs)}u)"
                                     for rs in layout.regions.values())
    wrappers.insert(0, {"signature": f"size_t {prefix}_work_bytes(int64_t n)",
                        "body": [*f"if (n < 1 || {too_large})".split("\n"), "    return 0;",
                                 f"return {prefix}_WORK_BYTES(n);"]})

    ctype = "double" if spec.dtype == "float64" else "float"
    x_ctype = "real" if net.inp.x_dtype is None else net.inp.c_type
    common = {"version": __version__, "source": _printable(os.path.basename(spec.source)),
              "name": spec.name, "hash": spec.content_hash(), "prefix": prefix,
              "regen_args": _regen_args(functions, max_batch)}
    runtime = [runtime_source(os.path.join(_C_RUNTIME, f"{h}.c")) for h in HELPERS if h in used]
    # only what is called: an unused static function is a warning (Clang's
    # -Wunused-function warns of static inline ones too)
    products = any("bpg_blas_gemm" in piece for piece in runtime)
    bodies = "\n".join(line for w in wrappers for line in w["body"])
    source = _env.get_template("source.c.j2").render(
        **common, gemm="sgemm" if spec.dtype == "float32" else "dgemm",
        defines=(["BPG_FLOAT32"] if spec.dtype == "float32" else [])
        + (["BPG_PRODUCTS"] if products else []),
        prelude=runtime_source(os.path.join(_HERE, "runtime", "prelude.c")),
        convert=_convert_source(bodies),
        x_ctype=x_ctype, runtime=runtime, functions=cores, wrappers=wrappers,
        tables=[_table_lines(values, name) for values, name in tables.items()])
    source = _omp(source)
    header = _env.get_template("header.h.j2").render(
        **common, guard=f"{prefix}_H_INCLUDED", dtype=spec.dtype, ctype=ctype,
        x_ctype=f"{prefix}_real" if net.inp.x_dtype is None else net.inp.c_type,
        y_ctype="int32_t" if net.labels else f"{prefix}_real",
        x_dims=", ".join(map(str, net.inp.shape)), x_note=_x_note(net),
        y_note=_y_note(net), input_checks=_input_checks(net),
        macros=_macros(net, functions), params=_param_rows(net),
        work_macros=work_macros, work_all=work_all, max_batch=max_batch,
        prototypes=prototypes)
    files = {f"{prefix}.h": header, f"{prefix}.c": source}
    return files, layout


def _regen_args(functions: tuple, max_batch: int) -> str:
    args = "" if functions == DEFAULT_FUNCTIONS else f" --functions {','.join(functions)}"
    return args + ("" if max_batch == 1 else f" --max-batch {max_batch}")


def _linear(a: int, b: int, n: str = "(n)") -> str:
    """a*n + b bytes as C (size_t arithmetic)."""
    if not a:
        return f"(size_t){b}"
    return f"(size_t){a} * (size_t){n}" + (f" + {b}" if b else "")


def _wrap_doc(lines: list) -> list:
    """Documentation lines, each wrapped at 76 columns (continuations
    indented)."""
    out = []
    for line in lines:
        out += textwrap.wrap(line, 76, subsequent_indent="  ")
    return out


def _wrap_call(head: str, args: list) -> str:
    """A prototype with its parameters over lines of at most ~90 columns."""
    lines, line = [], head
    for i, arg in enumerate(args):
        piece = arg + (", " if i < len(args) - 1 else ")")
        if len(line) + len(piece) > 90 and line.strip():
            lines.append(line.rstrip())
            line = " " * 4
        line += piece
    return "\n".join(lines + [line])


def _x_note(net: _Network) -> str:
    if net.inp.x_dtype is not None:
        return f", token ids in [0, {net.inp.bound})"
    return ""


def _y_note(net: _Network) -> str:
    lead = "(n)" if net.Ty == 1 else f"(n, {net.T})"
    if net.labels:
        return f"{lead} int32 class labels in [0, {net.K})"
    lead = lead[:-1] + f", {net.K})"
    return f"{lead} real targets"


def _input_checks(net: _Network) -> str:
    parts = []
    if net.inp.x_dtype is not None:
        parts.append("a token id out of range")
    if net.labels:
        parts.append("a label out of range")
    if net.seq:
        parts.append("a length out of [1, T]")
    return ", ".join(parts) or "never for this network"


def _macros(net: _Network, functions) -> list:
    p = net.prefix
    m = [{"name": f"{p}_N_PARAMS", "value": net.n_params,
          "comment": "elements of the flat parameter vector"},
         {"name": f"{p}_N_PARAM_ARRAYS", "value": len(net.params), "comment": ""},
         {"name": f"{p}_INPUT_SIZE", "value": net.in_size,
          "comment": "elements of one sample's x"},
         {"name": f"{p}_X_SIZE(n)", "value": f"((size_t)(n) * {net.in_size})",
          "comment": "elements of x"}]
    m.append({"name": f"{p}_IS_SEQUENCE", "value": int(net.seq),
              "comment": "1: x is a sequence (the functions take lengths)"})
    if net.seq:
        m.append({"name": f"{p}_STEPS", "value": net.T, "comment": "T, a sequence's steps"})
    if net.inp.x_dtype is not None:
        m.append({"name": f"{p}_X_BOUND", "value": net.inp.bound,
                  "comment": "token ids lie in [0, this)"})
    out_rows = net.T if net.seq_out else 1
    m += [{"name": f"{p}_OUTPUT_UNITS", "value": net.K, "comment": "the output's last axis"},
          {"name": f"{p}_OUTPUT_SIZE(n)", "value": f"((size_t)(n) * {out_rows * net.K})",
           "comment": "elements of forward's output"},
          {"name": f"{p}_Y_SIZE(n)",
           "value": f"((size_t)(n) * {net.Ty * (1 if net.labels else net.K)})",
           "comment": "elements of y"},
          {"name": f"{p}_Y_LABELS", "value": int(net.labels),
           "comment": "1: y holds class labels (int32), 0: real targets"}]
    for i, fn in enumerate(FUNCTIONS):
        m.append({"name": f"{p}_HAVE_{fn.upper()}", "value": int(fn in functions),
                  "comment": "1: the function is exported" if i == 0 else ""})
    return m


def _param_rows(net: _Network) -> list:
    return [{"key": key, "shape": "(" + ", ".join(map(str, shape)) + ")", "offset": off,
             "end": off + size - 1, "size": size, "macro": _param_macro(net.prefix, key)}
            for key, (off, size, shape) in net.params.items()]

