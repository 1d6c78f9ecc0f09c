"""The C backend: prints each lowered program as a C99 function over flat
row-major arrays, the module around them from ``templates/``, only the
runtime helpers (``runtime/*.c``) the printed code calls, and the Python
wrapper (the common API plus ``runtime/call.py``)."""
from __future__ import annotations

import dataclasses
import math
import os

from ...derivation import Derived
from ...ir import Var
from ...lower import Program
from ...passes import plan_for
from ...passes.allocate import first_fit as _first_fit  # moved there: the one allocator
from ..common.emitter import (Emitter, c_size, environment, has_steps,
                              offset_code)
from ...primitives.gather import im2col_image, sizes as pattern_sizes
from ...shapes import code, dim_coeffs, plus
from .fused import fused_loop

__all__ = ["CEmitter", "cname", "PREFIX"]

#: every variable of the graph is printed under this prefix in C (comments
#: keep the readable names), so that no layer or variable name can be a C
#: keyword, a macro of the headers or a libc symbol
PREFIX = "v_"


def cname(var: str) -> str:
    """The C name of graph variable ``var``."""
    return PREFIX + var

_HERE = os.path.dirname(os.path.abspath(__file__))
_env = environment(_HERE)
#: the runtime helpers: one file each in runtime/ (besides the prelude,
#: fastcall.c and split.c, the CPython entry points, see fastcall.py, and
#: per_sample.c, the per-sample functions' loops, see per_sample.py); none
#: calls another, so they are pasted in name order
HELPERS = tuple(sorted(f[:-2] for f in os.listdir(os.path.join(_HERE, "runtime"))
                       if f.endswith(".c")
                       and f not in ("prelude.c", "fastcall.c", "split.c", "per_sample.c")))


#: an im2col gather whose patches have at least this many entries per sample
#: is not made whole: the products that read it make them a chunk of
#: samples at a time (patch_chunks)
PATCH_CHUNK_MIN = 2048
#: entries of patches per chunk (256 KiB in float64: the chunk stays in the
#: core's cache between its im2col and its product)
PATCH_CHUNK_ENTRIES = 32768
#: the largest kernel W (filters x C·k·k entries) the chunks' P·Wᵀ copies
#: transposed onto the stack (32 KiB in float64), to run as P·(Wᵀ)
KERNEL_COPY_MAX = 4096


def _reads_patches(prog: Program, op, patches: str) -> bool:
    """Is ``op`` a product the chunks can make: P·Wᵀ, or Δᵀ·P (Δ with P's
    rows), with W and the result of Δᵀ·P of fixed size?"""
    if op.primitive.name != "matmul" or op.loop is not None or op.args[0] == op.args[1]:
        return False
    ta, tb = op.attrs["ta"], op.attrs["tb"]
    fixed = (lambda name: all(isinstance(d, int) for d in prog.vars[name].shape))
    if op.args[0] == patches and not ta and tb:
        return fixed(op.args[1])
    if op.args[1] == patches and ta and not tb:
        return (prog.vars[op.args[0]].shape[0] == prog.vars[patches].shape[0]
                and fixed(op.out))
    return False


def patch_chunks(prog: Program) -> dict:
    """{P: samples per chunk} for the im2col gathers whose patches P are
    made a chunk of samples at a time by every product that reads them
    (runtime/im2col.c then the product, per chunk; P's workspace holds one
    chunk).  Measured on LeNet's two convolutions (14,400 and 9,600 entries
    of patches per sample; docs/performance.md, "Convolutions"): the whole
    batch's patches (7.4 and 4.9 MB at N = 64) left the cache between the
    gather and the products that read them, forward and backward, and
    OpenBLAS packed each whole product; chunks of 256 KiB do neither."""
    readers = _readers(prog)
    out = {}
    for op in prog.ops:
        if op.primitive.name != "gather" or op.loop is not None or op.out in prog.outputs:
            continue
        pat, src = op.attrs["pattern"], op.args[0]
        rows, cols = prog.vars[op.out].shape
        per_sample = dim_coeffs(rows)[0] * cols if isinstance(cols, int) else 0
        if (pat[0] != "im2col" or im2col_image(pat) != op.attrs["s_in"]
                or prog.vars[src].shape[0] != "N" or dim_coeffs(rows)[1] != 0
                or not isinstance(per_sample, int) or per_sample < PATCH_CHUNK_MIN):
            continue
        used = readers.get(op.out, [])
        if used and all(_reads_patches(prog, r, op.out) for r in used):
            out[op.out] = max(1, PATCH_CHUNK_ENTRIES // per_sample)
    return out


def _readers(prog: Program) -> dict:
    """{variable: the ops that read it, in program order}"""
    readers: dict = {}
    for op in prog.ops:
        for a in set(op.args):
            readers.setdefault(a, []).append(op)
    return readers


def _col2im_product(prog: Program, op) -> bool:
    """Is ``op`` a product Δ·W (or Δ·Wᵀ) whose rows are Δ's, a multiple of
    N, with W of fixed size: rows a chunk of samples can make alone?"""
    if op.primitive.name != "matmul" or op.loop is not None or op.attrs["ta"]:
        return False
    rows = prog.vars[op.out].shape[0]
    return (prog.vars[op.args[0]].shape[0] == rows and dim_coeffs(rows)[1] == 0
            and all(isinstance(d, int) for d in prog.vars[op.args[1]].shape))


def col2im_chunks(prog: Program) -> dict:
    """{dP: samples per chunk} for the products dP = Δ·W whose only reader
    is a col2im (the scatter of an im2col pattern, by runtime/col2im.c)
    and whose entries per sample are at least PATCH_CHUNK_MIN: the col2im
    makes dP a chunk of samples at a time (the chunk's rows of Δ·W into
    dP's workspace, then their col2im into those samples of its result),
    so that dP is read back while it is in the core's cache; the dense dP
    of the whole batch is never made (LeNet's second convolution: 9,600
    entries per sample, 4.9 MB at N = 64)."""
    readers = _readers(prog)
    out = {}
    for op in prog.ops:
        if not _col2im_product(prog, op) or op.out in prog.outputs:
            continue
        used = readers.get(op.out, [])
        if len(used) != 1 or used[0].primitive.name != "scatter" or used[0].loop is not None:
            continue
        pat = used[0].attrs["pattern"]
        rows, cols = prog.vars[op.out].shape
        per_sample = dim_coeffs(rows)[0] * cols if isinstance(cols, int) else 0
        if (pat[0] != "im2col" or im2col_image(pat) != used[0].attrs["s_out"]
                or used[0].out in prog.outputs or prog.vars[used[0].out].shape[0] != "N"
                or not isinstance(per_sample, int) or per_sample < PATCH_CHUNK_MIN):
            continue
        out[op.out] = max(1, PATCH_CHUNK_ENTRIES // per_sample)
    return out


class CEmitter(Emitter):
    #: products make large patches in chunks (patch_chunks); the
    #: hessian_columns emitters (columns.py) print every op as it is
    chunk_patches = True

    def __init__(self, prog: Program, dtype: str, used: set, tables: dict | None = None,
                 transposes: dict | None = None, runs: dict | None = None,
                 accumulate: dict | None = None, chunk: bool = True,
                 split: frozenset = frozenset(), scales: dict | None = None,
                 mask_max: dict | None = None, idle_masks: dict | None = None):
        """``transposes``: {B: (loop, Bᵀ)} (the C rule of
        bpgen.passes.transposes, see ``CPlan``), copies the caller has room
        for in the workspace; ``runs``: the ops printed as one loop each
        (bpgen.passes.fuse_loops, ``CPlan.runs``); ``accumulate``: the
        products added into a map's result (bpgen.passes.accumulate,
        ``CPlan.accumulate``); none of either if not given.  ``chunk``:
        False for a part of a function whose variables another part reads
        (hessian_columns' shared pass).  ``split``: the products a split
        call's slices make together (split_products).  ``scales``: the
        constant scales folded into seqmm products (bpgen.passes.fold_scale,
        ``CPlan.scales``); none if not given.  ``mask_max``: row maxima
        made with the masks they read (bpgen.passes.mask_max).
        ``idle_masks``: zero-fill masks of values 0 at their masked keys
        (bpgen.passes.idle_masks), printed as nothing when in place."""
        ws = prog.workspace
        self.idle = {z: y for z, y in (idle_masks or {}).items()
                     if z in ws and ws.get(y) == ws[z]}
        self.mask_max = dict(mask_max or {})              # m -> Sm
        self.max_of = {sm: m for m, sm in self.mask_max.items()}
        self.split = split
        scales = scales or {}
        self.scaled_into = dict(scales.get("into", {}))     # Y -> (X, c)
        self.made_as = {x: y for y, (x, _) in self.scaled_into.items()}
        self.scale_read_by = dict(scales.get("read_by", {}))  # Y -> (X, c)
        self.transposes = transposes or {}
        self.runs = runs or {}
        self.accumulate = accumulate or {}
        if self.transposes:
            extra = {bt: Var(bt, tuple(reversed(prog.vars[b].shape)))
                     for b, (_, bt) in self.transposes.items()}
            prog = dataclasses.replace(prog, vars={**prog.vars, **extra})
        super().__init__(prog, dtype)
        self.used = used
        self.tables = tables if tables is not None else {}
        self.chunks = patch_chunks(self.prog) if self.chunk_patches and chunk else {}
        self.gathers = {op.out: op for op in self.prog.ops if op.out in self.chunks}
        if self.chunks:     # a product of chunked patches prints in its own place
            producer = {o.out: o for o in self.prog.ops}
            self.accumulate = {z: (rest, ps) for z, (rest, ps) in self.accumulate.items()
                               if not any(a in self.chunks for p in ps for a in producer[p].args)}
        self.added_into = {p: z for z, (_, ps) in self.accumulate.items() for p in ps}
        self.producers = {op.out: op for op in self.prog.ops}
        # (not a product added into a map, nor one of chunked patches)
        self.col2im_chunks = ({dp: m for dp, m in col2im_chunks(self.prog).items()
                               if dp not in self.added_into
                               and not set(self.producers[dp].args) & set(self.chunks)}
                              if self.chunk_patches and chunk else {})

    def comment(self, text: str) -> str:
        return f"/* {text} */"

    def use(self, helper: str) -> None:
        """Record that the printed code calls runtime helper ``bpg_<helper>``."""
        if helper not in HELPERS:
            raise ValueError(f"unknown C runtime helper {helper!r}")
        self.used.add(helper)

    def table(self, values) -> str:
        """The name of a static int32 table holding ``values`` (emitted once
        per module, before the functions)."""
        key = tuple(int(v) for v in values)
        if key not in self.tables:
            self.tables[key] = f"bpg_table_{len(self.tables)}"
        return self.tables[key]

    name = staticmethod(cname)

    def ptr(self, name: str, loop) -> str:
        """Where ``name`` (one step of it, in a loop) starts."""
        if self.stepped(name, loop):
            return f"({cname(name)} + t*{self.prog.vars[name].shape[1]}*N)"
        return cname(name)

    c_size = staticmethod(c_size)

    def bytes(self, shape) -> str:
        return f"sizeof(real)*(size_t)({c_size(shape)})"

    def statement(self, op, prim, loop) -> list:
        head = self.comment(f"{op.out} = {prim.equation(op, {})}")
        if op.out in self.chunks:
            return [head, self.comment(f"(made {self.chunks[op.out]} samples at a time by "
                                       f"the products that read it)")]
        patches = [a for a in op.args if a in self.chunks]
        if patches:
            return [head] + self.chunked_product(op, patches[0])
        if op.out in self.col2im_chunks:
            return [head, self.comment(f"(made {self.col2im_chunks[op.out]} samples at a time "
                                       f"by the col2im that reads it)")]
        if op.primitive.name == "scatter" and op.args[0] in self.col2im_chunks:
            return [head] + self.chunked_col2im(op)
        if loop is None and op.out in self.added_into:
            return [self.comment(f"{op.out} = {prim.equation(op, {})}: "
                                 f"added into {self.added_into[op.out]} below")]
        if loop is None and op.out in self.accumulate:
            return [head] + self._accumulated(op, prim)
        if loop is None and op.out in self.made_as:
            return [self.comment(f"{op.out} = {prim.equation(op, {})}: made scaled, as "
                                 f"{self.made_as[op.out]}, below")]
        if loop is None and op.out in self.scaled_into:
            x, c = self.scaled_into[op.out]
            pop = self.producers[x]
            return [self.comment(f"{op.out} = {prim.equation(op, {})} with {x} = "
                                 f"{pop.primitive.equation(pop, {})}: {x}·({c}) folded into "
                                 f"the product")] + \
                self._seqmm(dataclasses.replace(pop, out=op.out), c)
        if loop is None and op.out in self.scale_read_by:
            return [self.comment(f"{op.out} = {prim.equation(op, {})}: folded into the "
                                 f"products that read it")]
        if loop is None and op.out in self.idle:
            return [self.comment(f"{op.out} = {prim.equation(op, {})} = {self.idle[op.out]} "
                                 f"(in place: {self.idle[op.out]} is 0 at the masked keys "
                                 f"already, passes/idle_masks.py)")]
        if loop is None and op.out in self.mask_max:
            return [self.comment(f"{op.out} = {prim.equation(op, {})}: made with "
                                 f"{self.mask_max[op.out]} above")]
        if loop is None and op.out in self.max_of:
            m = self.max_of[op.out]
            return [self.comment(f"{op.out} = {prim.equation(op, {})}; {m} = rowmax({op.out}) "
                                 f"in the same pass")] + prim.c_with_rowmax(self, op, m)
        if loop is None and any(a in self.scale_read_by for a in op.args):
            return self._seqmm(op, 1, head)     # (only seqmm products read those)
        if (loop is None or not op.primitive.product or not op.attrs["tb"] or op.attrs["ta"]
                or op.args[1] not in self.transposes):
            return [head] + prim.c(self, op, loop)
        bt = self.transposes[op.args[1]][1]
        # the same product as A·(Bᵀ), with the copy made before the loop
        swapped = dataclasses.replace(op, args=(op.args[0], bt), attrs={**op.attrs, "tb": False})
        return [head] + prim.c(self, swapped, loop)

    def chunked_product(self, op, patches: str) -> list:
        """P·Wᵀ or Δᵀ·P with P = im2col(X), a chunk of m samples at a time:
        the chunk's patches into P's workspace, then their part of the
        product (its rows of P·Wᵀ; Δᵀ·P summed over the chunks)."""
        gather, m = self.gathers[patches], self.chunks[patches]
        rows, k = self.prog.vars[patches].shape
        r = dim_coeffs(rows)[0]
        p = cname(patches)
        self.use("im2col")
        loop = [f"for (int64_t n0 = 0; n0 < N; n0 += {m}) {{",
                f"    const int64_t m = N - n0 < {m} ? N - n0 : {m};",
                f"    bpg_im2col(m, {pattern_sizes(gather.attrs['pattern'])}, "
                f"{cname(gather.args[0])} + n0*{gather.attrs['s_in']}, {p});"]
        if op.args[0] == patches:               # P·Wᵀ: the chunk's rows
            f, w = self.prog.vars[op.out].shape[1], cname(op.args[1])
            if f * k > KERNEL_COPY_MAX:
                self.use("gemm_nt")
                return loop + [f"    bpg_gemm_nt({r}*m, {f}, {k}, {p}, {w}, "
                               f"{cname(op.out)} + n0*{r * f});", "}"]
            # P·(Wᵀ) with Wᵀ copied once: OpenBLAS's small-matrix product
            # is faster without the transpose (docs/performance.md)
            self.use("gemm_nn")
            return ["{", f"    real wt[{f * k}];  /* {op.args[1]}ᵀ, once for the chunks */",
                    f"    for (int64_t i = 0; i < {f}; i++)",
                    f"        for (int64_t j = 0; j < {k}; j++) wt[j*{f} + i] = {w}[i*{k} + j];"
                    ] + ["    " + line for line in loop] + [
                    f"        bpg_gemm_nn({r}*m, {f}, {k}, {p}, wt, {cname(op.out)} + n0*{r * f});",
                    "    }", "}"]
        f = self.prog.vars[op.out].shape[0]     # Δᵀ·P: the chunks' sum
        self.use("gemm_tn_acc")
        return ([f"memset({cname(op.out)}, 0, {self.bytes((f, k))});"] + loop
                + [f"    bpg_gemm_tn_acc({f}, {k}, {r}*m, {cname(op.args[0])} + n0*{r * f}, "
                   f"{p}, {cname(op.out)});", "}"])

    def chunked_col2im(self, op) -> list:
        """dX = col2im(dP) with dP = Δ·W, a chunk of m samples at a time:
        the chunk's rows of Δ·W into dP's workspace, then their col2im into
        the chunk's samples of dX (each sample's sums as whole)."""
        dp, m = op.args[0], self.col2im_chunks[op.args[0]]
        prod = self.producers[dp]
        rows, cols = self.prog.vars[dp].shape
        r, k = dim_coeffs(rows)[0], self.prog.vars[prod.args[0]].shape[1]
        kind = "n" + ("t" if prod.attrs["tb"] else "n")
        self.use(f"gemm_{kind}")
        self.use("col2im")
        return [f"for (int64_t n0 = 0; n0 < N; n0 += {m}) {{",
                f"    const int64_t m = N - n0 < {m} ? N - n0 : {m};",
                f"    bpg_gemm_{kind}({r}*m, {cols}, {k}, {cname(prod.args[0])} + n0*{r * k}, "
                f"{cname(prod.args[1])}, {cname(dp)});",
                f"    bpg_col2im(m, {pattern_sizes(op.attrs['pattern'])}, {cname(dp)}, "
                f"{cname(op.out)} + n0*{op.attrs['s_out']});",
                "}"]

    def fused(self, ops: list) -> list:
        return fused_loop(self, ops)

    def _accumulated(self, op, prim) -> list:
        """Z = rest, then Z += each product (bpgen.passes.accumulate)."""
        rest, products = self.accumulate[op.out]
        lines = []
        if rest is not None:
            args = tuple(sorted(s.name for s in rest.free_symbols if s.name in self.prog.vars))
            part = dataclasses.replace(op, args=args, attrs={**op.attrs, "expr": rest})
            lines += [self.comment(f"{op.out} = {prim.equation(part, {})}")]
            lines += prim.c(self, part, None)
        producer = {o.out: o for o in self.prog.ops}
        for j, p in enumerate(products):
            pop = producer[p]
            added = rest is not None or j > 0
            lines.append(self.comment(f"{op.out} {'+' if added else ''}= "
                                      f"{pop.primitive.equation(pop, {})}"))
            lines += pop.primitive.c(self, dataclasses.replace(
                pop, out=op.out, attrs={**pop.attrs, "acc": added}), None)
        return lines

    def _seqmm(self, op, alpha, head: str | None = None) -> list:
        """A seqmm product times ``alpha``, reading the arguments of the
        scales folded into it (bpgen.passes.fold_scale), its equation
        comment ``head`` saying which."""
        args, notes = [], []
        for a in op.args:
            if a in self.scale_read_by:
                x, c = self.scale_read_by[a]
                args.append(x)
                alpha = alpha * c
                notes.append(f"{a} = {x}·({c})")
            else:
                args.append(a)
        if head is not None and notes:
            head = self.comment(f"{op.out} = {op.primitive.equation(op, {})} with "
                                f"{', '.join(dict.fromkeys(notes))} folded into the product")
        op = dataclasses.replace(op, args=tuple(args), attrs={**op.attrs, "alpha": alpha})
        return ([head] if head is not None else []) + op.primitive.c(self, op, None)

    def loop(self, info, defined, body) -> list:
        steps = info["steps"]
        here = self.prog.vars[defined[0]].loop if defined else None
        lines = []
        for b, (first, bt) in self.transposes.items():
            if first == here:
                r, c = self.prog.vars[b].shape
                lines += [self.comment(f"{bt} = {b}ᵀ, once for every step"),
                          f"for (int64_t i = 0; i < {r}; i++)",
                          f"    for (int64_t j = 0; j < {c}; j++) "
                          f"{cname(bt)}[j*{r} + i] = {cname(b)}[i*{c} + j];"]
        lines += [f"for (int64_t it = 0; it < {code(steps)}; it++) {{",
                  f"    const int64_t t = {code(plus(steps, -1))} - it;" if info["reverse"]
                  else "    const int64_t t = it;",
                  "    const int64_t q = " + ("t + 1" if info["reverse"] else "t - 1")
                  + ";  /* the previous iteration's step */",
                  "    (void)q;"]
        lines += [("    " + line) if line else "" for line in body]
        lines.append("}")
        return lines


#: the functions a large call splits by samples (runtime/split.c), whose
#: weight gradients the slices may make together (split_products)
SPLIT_FUNCTIONS = ("loss", "loss_and_grad", "hvp")


def split_products(prog: Program) -> frozenset:
    """The outputs that are a product Aᵀ·B over the samples (A's rows a
    multiple of N), made outside any loop and read by nothing after: a
    weight gradient.  Printed as bpg_gemm_tn_out, which a split call's
    slices make together, each a block of its columns over every slice's
    samples, instead of each its own whole product summed after."""
    read = {a for op in prog.ops for a in op.args}
    outs = set(prog.outputs)
    return frozenset(
        op.out for op in prog.ops
        if op.primitive.product and op.attrs["ta"] and not op.attrs["tb"]
        and not op.attrs.get("acc") and op.loop is None and op.out in outs
        and op.out not in read and dim_coeffs(prog.vars[op.args[0]].shape[0])[0] != 0)


def size_params(prog: Program) -> list:
    """The size arguments of a generated C function: N, and with steps: any
    T (the step count, read from x by the wrapper, which checked it)."""
    return ["int64_t N", "int64_t T"] if has_steps(prog) else ["int64_t N"]


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _stored_shape(prog: Program, var: str) -> tuple:
    """The shape ``var`` takes in the workspace: one step of it when the
    program keeps it one step at a time."""
    shape = prog.vars[var].shape
    return ("N", shape[1]) if var in prog.step_vars else shape


def _workspace_decls(prog: Program, skip=frozenset()) -> list:
    """A pointer into the workspace for each temporary of ``prog`` (those
    in ``skip`` live elsewhere)."""
    return [f"real *const {cname(var)} = ws + {offset_code(a, b)};  "
            f"/* {_shape_str(_stored_shape(prog, var))} */"
            for var, (a, b) in prog.workspace.items() if var not in skip]


def _table_lines(values: tuple, name: str) -> list:
    """A static const int32 table, about 100 columns wide."""
    nums = [str(v) for v in values]
    lines, line = [f"static const int32_t {name}[{len(nums)}] = {{"], "   "
    for num in nums:
        if len(line) + len(num) + 2 > 100:
            lines.append(line)
            line = "   "
        line += f" {num},"
    lines += [line, "};"]
    return lines


def _function(derived: Derived, name: str, used: set, tables: dict,
              accumulate: bool = True, chunk: bool = True) -> dict:
    """``accumulate``: products added into the maps that sum them (the
    plan's; False: each into its own array, for bpgen export, whose own
    product kernel has no β; nor then scales folded into seqmm products,
    bpgen.passes.fold_scale).  ``chunk``: False keeps large im2col patches
    whole (patch_chunks; the exported library)."""
    prog = derived.programs[name]
    decls = _workspace_decls(prog)
    for var, (oa, ob, _, _, _) in zip(prog.outputs, derived.layout(name)):
        decls.append(f"real *const {cname(var)} = out + {offset_code(oa, ob)};  "
                     f"/* {_shape_str(prog.vars[var].shape)} */")
    # the loops' transposed weights after the program's own workspace
    plan = plan_for(prog, "c")
    transposes = plan.transposes
    wa, wb = prog.workspace_size
    for b, (_, bt) in transposes.items():
        r, c = prog.vars[b].shape
        decls.append(f"real *const {cname(bt)} = ws + {offset_code(wa, wb)};  /* ({c}, {r}) */")
        wb += r * c
    types = derived.element_types       # x's: the input kind's (default real)
    params = (size_params(prog) + [f"const {types.get(a, 'real')} *restrict {cname(a)}"
                                   for a in prog.inputs]
              + ["real *restrict out", "real *restrict ws"])
    split = split_products(prog) if accumulate and name in SPLIT_FUNCTIONS else frozenset()
    return {"name": name, "decls": decls, "ws": (wa, wb),
            "blocks": CEmitter(prog, derived.spec.dtype, used, tables, transposes,
                               plan.runs if accumulate else plan.runs_alone,
                               plan.accumulate if accumulate else {}, chunk, split,
                               plan.scales if accumulate else None,
                               plan.mask_max if accumulate else None,
                               plan.idle_masks if accumulate else None).blocks(),
            "signature": f"void bpg_{name}({', '.join(params)})"}


def _allocate(asm) -> tuple:
    """Offsets of the assembly's temporaries, reusing the memory of those no
    longer read: per-sample ones at a*N ({name: a}, total a), fixed-size
    scratch at b ({name: b}, total b)."""
    first, last = {}, {}
    for i, op in enumerate(asm.ops):
        for name in op.writes() + op.scratch():
            first.setdefault(name, i)
        for name in op.reads() + op.writes() + op.scratch():
            last[name] = i
    out = []
    for per_sample in (True, False):
        names = sorted((n for n in first if asm.t(n).kind == "temp"
                        and (asm.t(n).shape[0] == "N") == per_sample), key=first.get)
        size = {n: math.prod(asm.t(n).shape[1:] if per_sample else asm.t(n).shape)
                for n in names}
        out += _first_fit(names, size, first, last)
    return tuple(out)


def _assembly_function(derived: Derived, name: str, used: set, tables: dict) -> dict:
    """An assembly (the structured Hessian) as a C function with the generic
    signature: the curvature program (its outputs at the start of the
    workspace), then one block per op, headed by its equation."""
    asm = derived.assemblies[name]
    curv = derived.programs["curvature"]
    decls, ca, cb = [], 0, 0
    for var, (oa, ob, a, b, _) in zip(curv.outputs, derived.layout("curvature")):
        decls.append(f"real *const {cname(var)} = ws + {offset_code(oa, ob)};  "
                     f"/* {_shape_str(curv.vars[var].shape)} */")
        ca, cb = oa + a, ob + b
    offsets, per_sample, fixed, n_fixed = _allocate(asm)
    wa, wb = curv.workspace_size
    for var, off in offsets.items():
        decls.append(f"real *const {cname(var)} = ws + {offset_code(ca + off, cb)};  "
                     f"/* {_shape_str(asm.t(var).shape)} */")
    for var, off in fixed.items():      # after the per-sample part and the curvature's
        decls.append(f"real *const {cname(var)} = ws + "
                     f"{offset_code(ca + max(wa, per_sample), cb + wb + off)};  "
                     f"/* {_shape_str(asm.t(var).shape)} */")
    for (var, rows, cols), (_, ob, _, _, _) in zip(asm.outputs, derived.layout(name)):
        decls.append(f"real *const {cname(var)} = out + {ob};  /* ({rows}, {cols}) */")
    em = CEmitter(curv, derived.spec.dtype, used, tables)
    blocks = [{"head": ["the per-sample quantities: the derived curvature program"],
               "lines": [f"bpg_curvature(N, {', '.join(map(cname, asm.inputs))}, ws, "
                         f"ws + {offset_code(ca, cb)});"]}]
    blocks += [{"head": [op.equation(asm).text()], "lines": op.c(asm, em)} for op in asm.ops]
    types = derived.element_types       # x's: the input kind's (default real)
    params = (["int64_t N"] + [f"const {types.get(a, 'real')} *restrict {cname(a)}"
                               for a in asm.inputs]
              + ["real *restrict out", "real *restrict ws"])
    return {"name": name, "decls": decls, "ws": (ca + max(wa, per_sample), cb + wb + n_fixed),
            "blocks": blocks, "signature": f"void bpg_{name}({', '.join(params)})"}
