"""The C backend's ``bpg_hessian_columns``: H·v for many directions, the
forward and backward pass once, then the tangent part over a chunk of
directions at once (``_batched_columns``) or one direction at a time
(``_columns_function``'s fallback)."""
from __future__ import annotations

import dataclasses

from ...derivation import Derived
from ...lower import Program
from ...shapes import size_coeffs
from ..common.emitter import Directions, offset_code
from .emitter import (CEmitter, _first_fit, _shape_str, _stored_shape,
                      _workspace_decls, c_size, cname)

__all__ = ["columns_function"]


class _ColumnsEmitter(CEmitter):
    """The tangent part of ``bpg_hessian_columns``: a product with a block
    of the direction (``V_W``) is skipped, its result zeroed, when that
    block is zero (``vnz_<block>``; a unit direction has one nonzero block)."""

    def __init__(self, prog, dtype, used, tables, vvars):
        super().__init__(prog, dtype, used, tables)
        self.vvars = vvars

    def statement(self, op, prim, loop) -> list:
        head, *lines = super().statement(op, prim, loop)
        return [head] + _skip_zero_blocks(self, op, loop, lines)


class _BatchedEmitter(Directions, CEmitter):
    """The tangent part of ``bpg_hessian_columns`` over K directions at
    once (each primitive's ``c_batched``).  A batched variable of shape
    (r, c) is stored as (r, K, c); in its block of the function ``N`` is
    bound to NB·K (NB the batch), so a per-sample tangent is a batch of
    N·K rows and ``shape`` gives the (r·K, c) rows of the others.  Fixed
    variables (the shared forward and backward pass) keep the batch NB.
    A product with a block of v that is zero in every direction of the
    chunk is skipped (``vnz_<block>``)."""

    def __init__(self, prog, dtype, used, tables, batched: set, vvars: list):
        super().__init__(prog, dtype, used, tables)
        self.batched, self.vvars = batched, vvars
        self.scratch_size = 0          # per direction, constant
        self.copies: dict = {}         # seed -> its direction-major copy

    def ptr(self, name, loop):
        if self.stepped(name, loop):
            return f"({cname(name)} + t*{self.prog.vars[name].shape[1]}*{self.batch(name)})"
        return cname(name)

    def c_size(self, shape):
        if any(isinstance(d, str) and "K" in d for d in shape):
            return "*".join(f"({d})" for d in shape)
        return c_size(shape)

    def bytes(self, shape):
        return f"sizeof(real)*(size_t)({self.c_size(shape)})"

    def scratch(self, r, c) -> str:
        """Room for K matrices r x c (fixed sizes) for one op."""
        self.scratch_size = max(self.scratch_size, int(r) * int(c))
        return "bscratch"

    def directions_first(self, name, loop) -> tuple:
        """(lines, pointer): ``name``'s K directions one below the other, as
        (K·r, c): for a block of v copied once per chunk, else here."""
        r, c = (int(d) for d in self.lshape(name, loop))
        if name in self.vvars:
            self.copies.setdefault(name, f"{cname(name)}_dirs")
            return [], self.copies[name]
        self.use("cols_to_dirs")
        tmp = self.scratch(r, c)
        return [f"bpg_cols_to_dirs(K, {r}, {c}, {self.ptr(name, loop)}, {tmp}, {r}*{c});"], tmp

    def statement(self, op, prim, loop) -> list:
        head = self.comment(f"{op.out} = {prim.equation(op, {})}")
        return [head] + _skip_zero_blocks(self, op, loop, prim.c_batched(self, op, loop))


def _batched_allocate(prog: Program, ops: list, batched: set, whole: set) -> tuple:
    """Per-direction offsets of the batched variables ({name: (a, b)}:
    a*NB + b) and their total (A, B), reusing the memory of those no longer
    read; a variable a loop touches is live for the whole loop, ``whole``
    for all of ``ops``."""
    first, last, span = {}, {}, {}
    for i, op in enumerate(ops):
        if op.loop is not None:
            lo, hi = span.get(op.loop, (i, i))
            span[op.loop] = (min(lo, i), max(hi, i))
    for i, op in enumerate(ops):
        lo, hi = span.get(op.loop, (i, i))
        for name in (op.out, *op.args):
            if name in batched:
                first[name] = min(first.get(name, lo), lo)
                last[name] = max(last.get(name, hi), hi)
    for name in whole:
        first[name], last[name] = 0, len(ops)
    coeffs = {name: size_coeffs(_stored_shape(prog, name)) for name in first}
    order = sorted(first, key=lambda n: (first[n], n))
    per_sample, pa = _first_fit([n for n in order if coeffs[n][0]],
                                {n: a for n, (a, _) in coeffs.items()}, first, last)
    fixed, pb = _first_fit([n for n in order if not coeffs[n][0]],
                           {n: b for n, (_, b) in coeffs.items()}, first, last)
    return ({**{n: (o, 0) for n, o in per_sample.items()},
             **{n: (0, o) for n, o in fixed.items()}}, (pa, pb))


def _batched_columns(derived: Derived, used: set, tables: dict) -> dict:
    """``bpg_hessian_columns`` with its tangent part over up to ``kc``
    directions at once (the R-operator with the directions as extra
    columns: each product k times larger); NotImplementedError when a
    primitive of the tangent part has no rule for it."""
    prog = derived.programs["hessian_columns"]
    split = derived.meta["columns_split"]
    n_in = 2 + len(derived.base.params)
    vvars, outs = prog.inputs[n_in:], prog.outputs
    tangent = prog.ops[split:]
    batched = set(vvars) | {op.out for op in tangent}
    shapes = [prog.vars[v].shape for v in vvars]
    sizes = [size_coeffs(sh)[1] for sh in shapes]
    total = sum(sizes)
    em = _BatchedEmitter(dataclasses.replace(prog, ops=tangent), derived.spec.dtype,
                         used, tables, batched, vvars)
    per_dir = em.blocks()
    head = CEmitter(dataclasses.replace(prog, ops=prog.ops[:split]), derived.spec.dtype,
                    used, tables).blocks()
    offsets, (pa, pb) = _batched_allocate(prog, tangent, batched, set(vvars) | set(outs))
    wa, wb = prog.workspace_size
    decls = _workspace_decls(prog, skip=batched)
    decls += ["const int64_t NB = N;  /* the batch */",
              f"real *const wsd = ws + {offset_code(wa, wb)};  /* the directions' part */"]
    inner = ["const int64_t K = count - j0 < kc ? count - j0 : kc;",
             "/* the tangent pass runs on N·K rows: sample n in direction d is row n·K + d */",
             "const int64_t N = NB*K;",
             "(void)N;"]
    for var, (a, b) in sorted(offsets.items(), key=lambda kv: kv[1]):
        shape = _stored_shape(prog, var)
        # per-sample ones at a*N, the fixed-size ones after them
        where = f"{a}*N" if size_coeffs(shape)[0] else f"{pa}*N + {b}*K"
        inner.append(f"real *const {cname(var)} = wsd + {where};  /* {_shape_str(shape)} x K */")
    extra = pb
    inner.append(f"real *const bscratch = wsd + {pa}*N + {extra}*K;  /* K x {em.scratch_size} */")
    extra += em.scratch_size
    for var, copy in em.copies.items():
        r, c = prog.vars[var].shape
        inner.append(f"real *const {copy} = wsd + {pa}*N + {extra}*K;  /* K x ({r}, {c}) */")
        extra += r * c
    inner += ["/* the directions: rows j0 .. of V, or the unit vectors e_(first + j0) .. */",
              "if (V) {"]
    off = 0
    for var, (r, c), size in zip(vvars, shapes, sizes):
        inner.append(f"    bpg_dirs_to_cols(K, {r}, {c}, V + j0*{total} + {off}, {total}, "
                     f"{cname(var)});")
        off += size
    inner += ["} else {"]
    off = 0
    for var, (r, c), size in zip(vvars, shapes, sizes):
        inner += [f"    memset({cname(var)}, 0, sizeof(real)*(size_t)({size}*K));",
                  "    for (int64_t d = 0; d < K; d++) {",
                  f"        const int64_t i = first + j0 + d - {off};",
                  f"        if (i >= 0 && i < {size}) {cname(var)}[(i/{c}*K + d)*{c} + i%{c}] = 1;",
                  "    }"]
        off += size
    inner += ["}", "/* which blocks of v are nonzero in some direction (products with the "
              "others are skipped) */"]
    for var, size in zip(vvars, sizes):
        inner.append(f"const int vnz_{var} = bpg_nonzero({size}*K, {cname(var)});")
    for var, copy in em.copies.items():
        r, c = prog.vars[var].shape
        inner.append(f"bpg_cols_to_dirs(K, {r}, {c}, {cname(var)}, {copy}, {r * c});  "
                     f"/* {var}'s directions one below the other */")
    for block in per_dir:
        inner += [""] + [f"/* {h} */" for h in block["head"]] + block["lines"]
    inner += ["", "/* rows j0 .. of the result: H·v for each direction */"]
    off = 0
    for var, (r, c), size in zip(outs, shapes, sizes):
        inner.append(f"bpg_cols_to_dirs(K, {r}, {c}, {cname(var)}, out + j0*{total} + {off}, "
                     f"{total});")
        off += size
    em.use("dirs_to_cols")
    em.use("cols_to_dirs")
    em.use("nonzero")
    loop = {"head": [f"kc directions at a time: out row j = H·v_j (v_j = e_(first + j), rows "
                     f"first .. first+count-1 of the Hessian, {total} x {total}, or row j of V)"],
            "lines": ["if (kc < 1) kc = 1;  /* the wrapper's workspace holds kc directions */",
                      "for (int64_t j0 = 0; j0 < count; j0 += kc) {"]
            + [("    " + line) if line else "" for line in inner] + ["}"]}
    types = derived.element_types       # x's: the input kind's (default real)
    sig = (["int64_t N"] + [f"const {types.get(a, 'real')} *restrict {cname(a)}"
                            for a in prog.inputs[:n_in]]
           + ["const real *restrict V", "real *restrict out", "real *restrict ws",
              "int64_t first", "int64_t count", "int64_t kc"])
    return {"name": "hessian_columns", "decls": decls, "ws": (wa, wb),
            "ws_dir": (pa, extra),
            "blocks": head + [loop],
            "signature": f"void bpg_hessian_columns({', '.join(sig)})"}


def _skip_zero_blocks(em, op, loop, lines: list) -> list:
    """``lines`` of a product that reads a block of v, run only when that
    block is nonzero (``vnz_<block>``), else its result zeroed."""
    vs = [a for a in op.args if a in em.vvars]
    if op.prim != "matmul" or not vs:
        return lines
    cond = " && ".join(f"vnz_{v}" for v in vs)
    return ([f"if ({cond}) {{"] + [f"    {line}" for line in lines]
            + ["} else {", f"    memset({em.ptr(op.out, loop)}, 0, "
               f"{em.bytes(em.shape(op.out, loop))});  /* a zero block of v */", "}"])


def _columns_function(derived: Derived, used: set, tables: dict) -> dict:
    """``bpg_hessian_columns``: H·v for count directions v (rows first ..
    first+count-1 of the Hessian when V is NULL, else the rows of V), the
    forward and backward pass computed once, then the tangent part over kc
    directions at a time (_batched_columns) or, when a primitive of it has
    no rule for that, once per direction (v lives in the workspace)."""
    try:
        mine_used, mine_tables = set(used), dict(tables)
        func = _batched_columns(derived, mine_used, mine_tables)
    except NotImplementedError:
        pass
    else:
        used.update(mine_used)
        tables.update(mine_tables)
        return func
    prog = derived.programs["hessian_columns"]
    split = derived.meta["columns_split"]
    params = list(derived.base.params.values())
    n_in = 2 + len(params)
    vvars, outs = prog.inputs[n_in:], prog.outputs
    sizes = [size_coeffs(prog.vars[v].shape)[1] for v in vvars]
    total = sum(sizes)
    wa, wb = prog.workspace_size
    decls = _workspace_decls(prog)
    decls.append(f"real *const vbuf = ws + {offset_code(wa, wb)};  /* ({total},): e_j */")
    off = 0
    for var, size in zip(vvars, sizes):
        decls.append(f"const real *const {cname(var)} = vbuf + {off};  "
                     f"/* {_shape_str(prog.vars[var].shape)} */")
        off += size
    em = _ColumnsEmitter(prog, derived.spec.dtype, used, tables, set(vvars))
    base = dataclasses.replace(prog, ops=prog.ops[:split])
    tangent = dataclasses.replace(prog, ops=prog.ops[split:])
    em.prog = base
    head = em.blocks()
    em.prog = tangent
    per_dir = em.blocks()
    em.prog = prog
    lines, off = [], 0
    for var, size in zip(outs, sizes):
        lines.append(f"real *const {cname(var)} = out + (j - first)*{total} + {off};")
        off += size
    lines += ["/* the direction: row j - first of V, or e_j when V is NULL */",
              f"if (V) memcpy(vbuf, V + (j - first)*{total}, sizeof(real)*{total});",
              "else vbuf[j] = 1;",
              "/* which blocks of it are nonzero (products with the others are skipped) */"]
    off = 0
    for var, size in zip(vvars, sizes):
        lines.append(f"const int vnz_{var} = V ? bpg_nonzero({size}, vbuf + {off}) : "
                     f"(j >= {off} && j < {off + size});")
        off += size
    em.use("nonzero")
    for block in per_dir:
        lines += [""] + [f"/* {h} */" for h in block["head"]] + block["lines"]
    lines += ["if (!V) vbuf[j] = 0;"]
    loop = {"head": [f"one direction at a time: out row j - first = H·v_j, v_j = e_j (rows "
                     f"first .. first+count-1 of the Hessian, {total} x {total}) or row "
                     f"j - first of V"],
            "lines": [f"memset(vbuf, 0, sizeof(real)*{total});",
                      "for (int64_t j = first; j < first + count; j++) {"]
            + [("    " + line) if line else "" for line in lines] + ["}"]}
    types = derived.element_types       # x's: the input kind's (default real)
    sig = (["int64_t N"] + [f"const {types.get(a, 'real')} *restrict {cname(a)}"
                            for a in prog.inputs[:n_in]]
           + ["const real *restrict V", "real *restrict out", "real *restrict ws",
              "int64_t first", "int64_t count", "int64_t kc"])
    loop["lines"].insert(0, "(void)kc;  /* one direction at a time */")
    return {"name": "hessian_columns", "decls": decls, "ws": (wa, wb + -(-total // 8) * 8),
            "ws_dir": (0, 0), "blocks": head + [loop],
            "signature": f"void bpg_hessian_columns({', '.join(sig)})"}


columns_function = _columns_function
