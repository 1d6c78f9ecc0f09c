"""A run of element-wise statements as one C loop (the runs:
:mod:`bpgen.passes.fuse_loops`).

Each statement keeps its equation as a comment above the loop.  The loop
runs over the rows; per row, one pass over the columns per phase (a map
that reads a row sum of the run is in a later phase than the sum).  In a
phase's body each map's value is a local (``e_<name>``) that later
statements of the phase read, written to its array only when a later phase
or something after the run reads it, and each sum accumulates there: a row
sum in a double per row (like runtime/rowsum.c, stored after its phase), a
column sum into its output row (zeroed before the loop, like colsum.c), the
total in one double (like sumall.c).  Without row-wise arguments or sums
the run is one flat loop over the R·C elements.  What a map computes the
same for a whole row (a function of row sums and scalars, like
layernorm's 1/sqrt(var + eps)) is computed once per row, before the
phase's loop (:func:`bpgen.primitives.map._c_invariants`)."""
from __future__ import annotations

from ...primitives.map import _c_body, _c_invariants
from ...printers import numeric
from ...shapes import dim_code

__all__ = ["fused_loop"]


def _local(name: str) -> str:
    return "e_" + name


def _acc(name: str) -> str:
    return "acc_" + name


def _phases(ops: list) -> list:
    """The phase of each op of the run: an op reading a row sum of the run
    (a map; or a sum, when the run's rows are one column wide) goes after
    the phase that completes it (phases never go back)."""
    maps = {o.out for o in ops if o.primitive.elementwise}
    phase, out, current = {}, [], 0
    for op in ops:
        for a in op.args:
            if a in phase and a not in maps:
                current = max(current, phase[a] + 1)
        phase[op.out] = current
        out.append(current)
    return out


def fused_loop(em, ops: list) -> list:
    """The C lines of the run ``ops`` (top-level statements; see the module)."""
    prog = em.prog
    first = ops[0]
    r, c = em.shape(first.out if first.primitive.elementwise else first.args[0], None)
    last = max(i for i, o in enumerate(prog.ops) if o is ops[-1])
    after = {a for op in prog.ops[last + 1:] for a in op.args} | set(prog.outputs)
    phases = _phases(ops)
    maps = {op.out: p for op, p in zip(ops, phases) if op.primitive.elementwise}
    # read in a later phase than their own: stored
    later = {a for op, p in zip(ops, phases) for a in op.args if a in maps and maps[a] < p}
    head, pre, post = [], [], []
    bodies = [[] for _ in range(phases[-1] + 1)]       # per phase: its loop body
    ends = [[] for _ in bodies]                       # per phase: after its loop
    accs = [[] for _ in bodies]                       # per phase: its reductions
    starts = [[] for _ in bodies]                     # per phase: before its loop
    rows_acc, rowwise = [], len(bodies) > 1
    start = next(i for i, o in enumerate(prog.ops) if o is ops[0])
    for i, (op, p) in enumerate(zip(ops, phases)):
        if i and op.grad_of != ops[i - 1].grad_of:      # a new "Grad of" block's head
            backward = any(o.grad_of is not None for o in prog.ops[:start + i + 1])
            head += [""] + [em.comment(h) for h in em.head(op.grad_of, False, backward)]
        if op.comment and op.grad_of is None:
            head.append(em.comment(op.comment))
        head.append(em.comment(f"{op.out} = {op.primitive.equation(op, {})}"))
        body = bodies[p]
        if op.primitive.elementwise:
            access = {}
            for a in op.args:
                sh = prog.vars[a].shape
                if maps.get(a) == p:
                    access[a] = _local(a)
                elif sh == (r, c):
                    access[a] = f"{em.ptr(a, None)}[k]"
                elif sh == (1, 1):
                    access[a] = f"{em.ptr(a, None)}[0]"
                elif sh[0] == 1:
                    access[a], rowwise = f"{em.ptr(a, None)}[cc]", True
                else:
                    access[a], rowwise = f"{em.ptr(a, None)}[rr]", True
            # what is the same along the row (or the run): once, before the
            # phase's loop (or the run's)
            once, expr, names = _c_invariants(
                em, numeric(op.attrs["expr"]), access,
                [a for a in op.args if access[a].endswith(("[rr]", "[0]"))], f"h{i}_")
            starts[p] += once
            body += _c_body(em, expr, {**access, **names},
                            f"const real {_local(op.out)}", prefix=f"cse{i}_")
            if op.out in after or op.out in later:
                body.append(f"{em.ptr(op.out, None)}[k] = {_local(op.out)};")
            continue
        (a,) = op.args
        value = _local(a) if maps.get(a) == p else f"{em.ptr(a, None)}[k]"
        out, axis = em.ptr(op.out, None), op.attrs["axis"]
        if axis == 0:               # column sums: into the output row, in row order
            rowwise = True
            pre.append(f"for (int64_t cc = 0; cc < {dim_code(c)}; cc++) {out}[cc] = 0;")
            body.append(f"{out}[cc] += {value};")
        elif axis == 1:             # row sums: a double per row
            rowwise = True
            rows_acc.append(_acc(op.out))
            accs[p].append(_acc(op.out))
            body.append(f"{_acc(op.out)} += {value};")
            ends[p].append(f"{out}[rr] = (real){_acc(op.out)};")
        else:                       # the total: one double
            accs[p].append(_acc(op.out))
            pre.append(f"double {_acc(op.out)} = 0;")
            body.append(f"{_acc(op.out)} += {value};")
            post.append(f"{out}[0] = (real){_acc(op.out)};")

    def simd(p):
        return "#pragma omp simd" + (f" reduction(+:{', '.join(accs[p])})" if accs[p] else "")
    if not rowwise:
        lines = [simd(0), f"for (int64_t k = 0; k < {em.c_size((r, c))}; k++) {{"]
        lines += [f"    {b}" for b in bodies[0]] + ["}"]
        if starts[0]:       # the run's invariants, in a block of their own
            lines = ["{"] + [f"    {x}" for x in starts[0] + lines] + ["}"]
        return head + pre + lines + post
    lines = pre + [f"for (int64_t rr = 0; rr < {dim_code(r)}; rr++) {{"]
    lines += [f"    double {a} = 0;" for a in rows_acc]
    for p, body in enumerate(bodies):
        lines += [f"    {x}" for x in starts[p]]
        lines += [f"    {simd(p)}", f"    for (int64_t cc = 0; cc < {dim_code(c)}; cc++) {{",
                  f"        const int64_t k = rr*{dim_code(c)} + cc;"]
        lines += [f"        {b}" for b in body] + ["    }"]
        lines += [f"    {e}" for e in ends[p]]
    return head + lines + ["}"] + post
