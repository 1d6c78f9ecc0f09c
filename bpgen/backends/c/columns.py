"""The C backend's ``bpg_hessian_columns``: H·v for many directions, printed
from :class:`bpgen.columns.Columns` (``derived.columns``).

The head program (the forward and backward pass) is printed once like any
other; the tangent program over a chunk of K directions at once, each
primitive by its ``c_batched`` rule (``_BatchedEmitter``), or, when the
split says some primitive has none, one direction at a time by its ``c``
rule (``_ColumnsEmitter``, K = 1).  Around it, ``templates/columns.c.j2``
prints the chunk loop from data: the directions go into their blocks and
the results out through static tables of blocks {rows, cols, first
element, workspace offset} read by the runtime helpers ``bpg_columns_in``
and ``bpg_columns_out`` (``runtime/columns_*.c``)."""
from __future__ import annotations

import os

from ...columns import Columns
from ...derivation import Derived
from ...passes.allocate import stored_shape
from ...primitives import PRIMITIVES
from ...shapes import code, size_coeffs
from ..common.emitter import Directions, environment, offset_code
from .emitter import CEmitter, _shape_str, _workspace_decls, c_size, cname, size_params

__all__ = ["columns_function"]

_env = environment(os.path.dirname(os.path.abspath(__file__)))


class _ColumnsEmitter(CEmitter):
    """The tangent part of ``bpg_hessian_columns`` one direction at a time:
    a product with a block of the direction (``V_W``) is skipped, its result
    zeroed, when that block is zero (``vnz_<block>``; a unit direction has
    one nonzero block)."""
    chunk_patches = False

    def __init__(self, prog, dtype, used, tables, vvars, batched):
        super().__init__(prog, dtype, used, tables)
        self.vvars, self.batched = vvars, batched
        self.zero_flags = {v: f"vnz_{v}" for v in vvars}
        self.zero_plan = zero_plan(prog, batched, vvars)
        self.op_index = {id(op): i for i, op in enumerate(prog.ops)}

    def statement(self, op, prim, loop) -> list:
        head, *lines = super().statement(op, prim, loop)
        return [head] + _skip_zero(self, op, loop, lines)


class _BatchedEmitter(Directions, CEmitter):
    """The tangent part of ``bpg_hessian_columns`` over K directions at
    once (each primitive's ``c_batched``).  A batched variable of shape
    (r, c) is stored as (r, K, c); in its block of the function ``N`` is
    bound to NB·K (NB the batch), so a per-sample tangent is a batch of
    N·K rows and ``shape`` gives the (r·K, c) rows of the others.  Fixed
    variables (the shared forward and backward pass) keep the batch NB.
    A product with a block of v that is zero in every direction of the
    chunk is skipped (``vnz_<block>``)."""

    chunk_patches = False

    def __init__(self, prog, dtype, used, tables, batched: set, vvars: list):
        super().__init__(prog, dtype, used, tables)
        self.batched, self.vvars = batched, vvars
        self.zero_flags = {v: f"vnz_{v}" for v in vvars}
        self.zero_plan = zero_plan(prog, batched, vvars)
        self.op_index = {id(op): i for i, op in enumerate(prog.ops)}
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
        return [head] + _skip_zero(self, op, loop, prim.c_batched(self, op, loop))


def zero_plan(prog, batched, vvars) -> tuple:
    """Which tangent ops of ``prog`` (over ``batched`` variables, the
    directions' blocks ``vvars``) are skipped when their tangent arguments
    are all zero in a chunk (``Primitive.zero_when``): ({op's index: the
    blocks of v it is zero without, as flags}, {outputs of skipped ops
    whose zeroing is left out: every op reading one is skipped whenever it
    is, and it is not a result}).  A tangent op's output is zero unless a
    direction falls in one of the blocks of its flags (only outside a loop:
    a loop's values are per step)."""
    atoms = {v: frozenset([f"vnz_{v}"]) for v in vvars}
    skipped = {}
    for i, op in enumerate(prog.ops):
        tangent = [a for a in op.args if a in batched]
        if (tangent and all(a in atoms for a in tangent)
                and op.primitive.zero_when(op, set(tangent))):
            skipped[i] = frozenset().union(*(atoms[a] for a in tangent))
            if op.loop is None:
                atoms[op.out] = skipped[i]
    readers = {}
    for i, op in enumerate(prog.ops):
        for a in op.args:
            readers.setdefault(a, []).append(i)
    unread = {prog.ops[i].out for i, flags in skipped.items()
              if prog.ops[i].loop is None and prog.ops[i].out not in prog.outputs
              and all(r in skipped and skipped[r] <= flags for r in readers.get(prog.ops[i].out, []))}
    return skipped, unread


def _skip_zero(em, op, loop, lines: list) -> list:
    """``lines`` of a tangent op, run only when one of its tangent
    arguments is nonzero in some direction of the chunk (zero_plan), else
    its result zeroed, unless no op reads it then.  A block of v is zero
    when no direction of the chunk falls in it (``vnz_<block>``); a tangent
    is zero when the ops making it were skipped (``tnz_<name>``, outside a
    loop: the flags live in the chunk's scope).  For a unit direction of a
    later layer the tangents of the forward pass before it are zero."""
    skipped, unread = em.zero_plan
    i = em.op_index[id(op)]
    if i not in skipped:
        return lines
    tangent = [a for a in op.args if a in em.batched]
    flags = sorted({em.zero_flags[a] for a in tangent})
    cond = " || ".join(flags)
    out = []
    if loop is None:
        flag = em.zero_flags[op.out] = f"tnz_{op.out}"
        if len(flags) > 1:
            out.append(f"const int {flag} = {cond};")
            cond = flag
        else:
            em.zero_flags[op.out] = cond
    what = ("a zero block of v" if all(a in em.vvars for a in tangent)
            else "zero tangents")
    if op.out in unread:
        return out + ([f"if ({cond}) {{  /* else {what}: read by none of the ops then run */"]
                      + [f"    {line}" for line in lines] + ["}"])
    # the size as a non-negative count: GCC's -Wstringop-overflow otherwise
    # warns that a negative N would make it huge (seen on a nested-block
    # attention network's tangent of V)
    size = em.c_size(em.shape(op.out, loop))
    return out + ([f"if ({cond}) {{"] + [f"    {line}" for line in lines]
                  + ["} else {", f"    memset({em.ptr(op.out, loop)}, 0, "
                     f"sizeof(real)*(size_t)({size} > 0 ? {size} : 0));  /* {what} */", "}"])


def _batched(cols: Columns, dtype: str, used: set, tables: dict) -> tuple:
    """(template data, per-direction workspace (a, b)) of the tangent part
    over K directions at once: the batched variables where the allocator
    put them (cols.workspace), then the emitter's scratch and the copies of
    v it asked for."""
    em = _BatchedEmitter(cols.tangent, dtype, used, tables, cols.batched,
                         [b.name for b in cols.directions])
    blocks = em.blocks()
    pa, pb = cols.workspace_size
    stored = []
    for var, (a, b) in sorted(cols.workspace.items(), key=lambda kv: kv[1]):
        shape = stored_shape(cols.program, var)
        # per-sample ones at a*N, the fixed-size ones after them
        at = f"{code(a)}*N" if size_coeffs(shape)[0] != 0 else f"{code(pa)}*N + {b}*K"
        stored.append({"name": cname(var), "at": at, "shape": f"{_shape_str(shape)} x K"})
    extra = pb
    stored.append({"name": "bscratch", "at": f"{code(pa)}*N + {extra}*K",
                   "shape": f"K x {em.scratch_size}"})
    extra += em.scratch_size
    copies = []
    for var, copy in em.copies.items():
        r, c = cols.program.vars[var].shape
        stored.append({"name": copy, "at": f"{code(pa)}*N + {extra}*K",
                       "shape": f"K x ({r}, {c})"})
        copies.append({"name": cname(var), "dirs": copy, "rows": r, "cols": c, "size": r * c})
        extra += r * c
    if copies:
        em.use("cols_to_dirs")
    offset = {n: b for n, (_, b) in cols.workspace.items()}
    data = {"limit": "if (kc < 1) kc = 1;  /* the wrapper's workspace holds kc directions */",
            "stored": stored, "copies": copies, "blocks": blocks, "base": f"wsd + {code(pa)}*N",
            "directions_table": _table(em, cols.directions, offset),
            "results_table": _table(em, cols.results, offset),
            "head": f"kc directions at a time: out row j = H·v_j (v_j = e_(first + j), rows "
                    f"first .. first+count-1 of the Hessian, {cols.total} x {cols.total}, or "
                    f"row j of V)"}
    return data, (pa, extra)


def _one_at_a_time(cols: Columns, dtype: str, used: set, tables: dict) -> tuple:
    """(template data, room for one direction) of the tangent part one
    direction at a time (K = 1: the direction's blocks, then the result's)."""
    em = _ColumnsEmitter(cols.tangent, dtype, used, tables, {b.name for b in cols.directions},
                         cols.batched)
    blocks = em.blocks()
    total = cols.total
    offset = {**{b.name: b.at for b in cols.directions},
              **{b.name: total + b.at for b in cols.results}}
    stored = [{"name": cname(b.name), "at": str(offset[b.name]),
               "shape": _shape_str((b.rows, b.cols))} for b in cols.directions + cols.results]
    data = {"limit": "kc = 1;  /* one direction at a time: a primitive of the tangent part "
                     "has no rule for k at once */",
            "stored": stored, "copies": [], "blocks": blocks, "base": "wsd",
            "directions_table": _table(em, cols.directions, offset),
            "results_table": _table(em, cols.results, offset),
            "head": f"one direction at a time: out row j = H·v_j (v_j = e_(first + j), rows "
                    f"first .. first+count-1 of the Hessian, {total} x {total}, or row j "
                    f"of V)"}
    return data, (0, -(-2 * total // 8) * 8)


def _table(em, blocks: tuple, offset: dict) -> str:
    """A static table of ``blocks``: rows, cols, first element, offset."""
    return em.table([v for b in blocks for v in (b.rows, b.cols, b.at, offset[b.name])])


def columns_function(derived: Derived, used: set, tables: dict) -> dict:
    """``bpg_hessian_columns``: H·v for count directions v (rows first ..
    first+count-1 of the Hessian when V is NULL, else the rows of V), the
    forward and backward pass computed once, then the tangent part over kc
    directions at a time, or once per direction when the split says a
    primitive of it has no rule for more (then v and H·v live in the
    workspace, and _WS_DIR is (0, 0))."""
    cols = derived.columns
    prog, dtype = cols.program, derived.spec.dtype
    head = CEmitter(cols.head, dtype, used, tables, chunk=False).blocks()
    wa, wb = prog.workspace_size
    # over kc directions at once when every tangent op has a rule and it pays
    # in C (Primitive.batched_in_c), else one direction at a time
    if cols.batched_rule and all(PRIMITIVES[op.prim].batched_in_c for op in cols.tangent.ops):
        data, per_dir = _batched(cols, dtype, used, tables)
        decls, ws = _workspace_decls(prog, skip=cols.batched), (wa, wb)
    else:
        data, extra = _one_at_a_time(cols, dtype, used, tables)
        decls, ws, per_dir = _workspace_decls(prog), (wa, wb + extra[1]), (0, 0)
    for helper in ("columns_in", "columns_out", "nonzero"):
        used.add(helper)
    text = _env.get_template("columns.c.j2").render(
        **data, wsd=offset_code(wa, wb), total=cols.total,
        directions=[{"name": b.name, "cname": cname(b.name), "size": b.size,
                     "at": b.at}
                    for b in cols.directions],
        results=cols.results)
    loop = {"head": [data["head"]], "lines": [line.rstrip() for line in text.split("\n")]}
    if loop["lines"] and not loop["lines"][-1]:
        loop["lines"].pop()
    n_in = len(cols.program.inputs) - len(cols.directions)
    types = derived.element_types       # x's: the input kind's (default real)
    sig = (size_params(prog) + [f"const {types.get(a, 'real')} *restrict {cname(a)}"
                            for a in prog.inputs[:n_in]]
           + ["const real *restrict V", "real *restrict out", "real *restrict ws",
              "int64_t first", "int64_t count", "int64_t kc"])
    return {"name": "hessian_columns", "decls": decls, "ws": ws, "ws_dir": per_dir,
            "blocks": head + [loop],
            "signature": f"void bpg_hessian_columns({', '.join(sig)})"}
