"""``map``: C = f(A, B, ...) elementwise, with row/column/scalar broadcasting.

``f`` is a SymPy scalar expression whose symbols are the argument names (and
``N``); SymPy differentiates it, and the derivative is rewritten in terms of
the stored output where possible (tanh' = 1 - a², σ' = a(1 - a), exp' = exp).
"""
from __future__ import annotations

import sympy as sp

from ..printers import CPrinter, EquationPrinter, NumpyPrinter, latex_expr, numeric
from ..shapes import broadcast_shape, dim_code
from .base import Primitive, register, tangent_name, wanted


def _shared_calls(expr, prefix: str = "cse"):
    """Function calls (tanh, exp, ...) that ``expr`` evaluates more than once,
    as temporaries computed once per element: [(symbol, value)], and the
    expression in terms of them (temporaries named prefix0, prefix1, ...).
    Other common subexpressions are left to the compiler."""
    temps, reduced = sp.cse(expr, symbols=sp.numbered_symbols(prefix), optimizations=None,
                            order="none")
    keep = [(t, e) for t, e in temps if e.atoms(sp.Function)]
    if not keep:
        return [], expr
    drop = {t: e for t, e in temps if not e.atoms(sp.Function)}
    out, done = [], {}
    for t, e in temps:     # substitute the dropped ones back, in order
        e = e.xreplace(done)
        if t in drop:
            done[t] = e
        else:
            out.append((t, e))
    return out, reduced[0].xreplace(done)


def _c_body(em, expr, access: dict, dst: str, prefix: str = "cse") -> list:
    """C statements computing ``expr`` for one element into ``dst``
    (``access``: how each argument is read there), shared calls first
    (``prefix``: their names' start)."""
    temps, expr = _shared_calls(expr, prefix)
    printer = CPrinter({**access, **{t.name: t.name for t, _ in temps}}, em.dtype)
    body = [f"const real {t.name} = {printer.doprint(e)};" for t, e in temps]
    body.append(f"{dst} = {printer.doprint(expr)};")
    for helper in printer.helpers:
        em.use(helper)
    return body


def _costly(e) -> bool:
    """Does computing ``e`` call a function or take a root/fractional power
    (several times an addition's cost: a vector square root or division is
    ~10x a multiply-add on recent x86)?"""
    return any(isinstance(n, sp.Function) or (n.is_Pow and not n.exp.is_Integer)
               for n in sp.preorder_traversal(e))


def _c_invariants(em, expr, access: dict, invariant, prefix: str,
                  reciprocals: bool = False) -> tuple:
    """The parts of ``expr`` that are the same for every element of a row
    (or of the whole loop), computed once before it: ([C line], the
    expression reading them, their accesses).  ``invariant``: the argument
    names read per row (``[rr]``) or as scalars (``[0]``).  A part is
    hoisted whole when it calls a function or takes a root (layernorm's
    1/sqrt(var + eps): hoisted, its loop 3.8x faster on AVX-512); of a
    reciprocal only its base, so that ``x/(a + b)`` stays a division (the
    same bits as in the loop).  ``reciprocals``: the reciprocal itself
    (``x·h``, h = 1/(a + b) once: a multiplication in the loop, within a
    rounding of the division), for loops that run a row many times (the
    k directions of ``c_batched``)."""
    invariant = set(invariant) | {"N"}
    made = {}

    def inv(e) -> bool:
        names = {s.name for s in e.free_symbols}
        return bool(names) and names <= invariant

    def name(e):
        if e not in made:
            made[e] = sp.Symbol(f"{prefix}{len(made)}")
        return made[e]

    def hoist(e):
        if not e.args:
            return e
        if (reciprocals and e.is_Pow and e.exp.is_Integer and e.exp < 0 and inv(e.base)
                and not e.base.is_Number):
            if e.exp == -1:
                return name(e)
            # 1/(b·b), not pow(b, -2)
            return name(sp.Pow(sp.Pow(e.base, -e.exp), -1, evaluate=False))
        if e.is_Pow and e.exp == -1:
            base = e.base
            if inv(base) and not (base.is_Symbol or base.is_Number):
                return sp.Pow(name(base), -1, evaluate=False)
            return sp.Pow(hoist(base), -1, evaluate=False)
        if inv(e) and _costly(e):
            return name(e)
        if isinstance(e, sp.Piecewise):       # its conditions stay as they are
            return e
        return e.func(*[hoist(a) for a in e.args], evaluate=False)

    new = hoist(expr)
    if not made:
        return [], expr, {}
    printer = CPrinter(access, em.dtype)
    lines = [f"const real {t.name} = {printer.doprint(e)};" for e, t in made.items()]
    for helper in printer.helpers:
        em.use(helper)
    return lines, new, {t.name: t.name for t in made.values()}


def _rowwise(em, op, loop, expr) -> bool:
    """Over k directions, is the map the plain one over the N·K rows: every
    argument batched and of the output's shape, and no N (the batch) in it?"""
    shape = em.lshape(op.out, loop)
    return all(s.name != "N" for s in expr.free_symbols) and all(
        em.is_batched(a) and em.lshape(a, loop) == shape for a in op.args)


def _partial(op, a: str):
    """∂f/∂a, in terms of the op's own output where SymPy can."""
    expr = op.attrs["expr"]
    d = sp.diff(expr, sp.Symbol(a))
    if d != 0 and not expr.is_Symbol:
        d = d.subs(expr, sp.Symbol(op.out))
    return d


def assignable(dst: str) -> str:
    """``dst`` as the target of an assignment that writes into the array:
    ``a[...]`` for an array ``a``, a slice as it is."""
    return dst if dst.endswith("]") else f"{dst}[...]"


def numpy_expr(expr, access: dict, out: str, into=None) -> list:
    """Lines computing the elementwise ``expr`` into ``out`` (NumPy code;
    ``access``: how each argument is read).  ``into`` = (destination, bind):
    the result is written into that array (``out=``), then bound to ``out``
    when bind is true; None: ``out`` is a fresh array."""
    temps, expr = _shared_calls(numeric(expr))
    printer = NumpyPrinter({}, access)
    lines = [f"{t.name} = {printer.doprint(e)}" for t, e in temps]
    if into is not None:
        dst, bind = into
        call = printer.into(expr, dst)
        if call is not None:
            return lines + [f"{out} = {call}" if bind else call]
        if not bind:
            return lines + [f"{assignable(dst)} = {printer.doprint(expr)}"]
    return lines + [f"{out} = {printer.doprint(expr)}"]


@register
class Map(Primitive):
    name = "map"
    elementwise = True

    def aliases(self, op) -> bool:
        return op.attrs["expr"].is_Symbol

    def zero_when(self, op, zero: set) -> bool:
        """SymPy's answer: f with those arguments 0 is 0 (a tangent's map is
        a sum of terms each holding one tangent factor)."""
        expr = op.attrs["expr"]
        return expr.xreplace({s: sp.S.Zero for s in expr.free_symbols if s.name in zero}) == 0

    def build(self, g, expr, base: str = "t", shape: tuple | None = None,
              label: str = "", comment: str = "") -> str:
        """Elementwise ``expr`` over the variables named by its symbols.

        Returns an existing variable when ``expr`` is just that variable (no
        op is needed), so callers can compose freely.
        """
        expr = sp.sympify(expr)
        args = tuple(sorted(s.name for s in expr.free_symbols if s.name in g.vars))
        shapes = [g.shape(a) for a in args]
        if shape is None:
            shape = broadcast_shape(shapes) if shapes else (1, 1)
        else:
            shape = tuple(shape)
            if shapes and broadcast_shape(shapes + [shape]) != shape:
                raise ValueError(f"map arguments {shapes} do not broadcast to {shape}")
        if isinstance(expr, sp.Symbol) and expr.name in g.vars and g.shape(expr.name) == shape:
            return expr.name
        return g.emit(self.name, base, shape, args, {"expr": expr}, label, comment)

    def vjp(self, g, op, gout, only=None):
        res = {}
        for a in op.args:
            if not wanted(g, a, only):
                continue
            d = _partial(op, a)
            if d == 0:
                continue
            label = "δ" + g.vars[a].label
            full = g.map(sp.Symbol(gout) * d, base="d_" + a, shape=g.shape(op.out),
                         label=label)
            res[a] = g.reduce_to(full, g.shape(a), base="d_" + a, label=label)
        return res

    def jvp(self, g, op, t):
        terms = []
        for a in op.args:
            if a not in t:
                continue
            d = _partial(op, a)
            if d != 0:
                terms.append(d * sp.Symbol(t[a]))
        if not terms:
            return None
        base, label = tangent_name(g, op)
        return g.map(sp.Add(*terms), base=base, shape=g.shape(op.out), label=label)

    def equation(self, op, names, latex=False):
        if latex:
            return latex_expr(op.attrs["expr"], names)
        return EquationPrinter(names).doprint(op.attrs["expr"])

    def numpy(self, em, op, loop):
        shape = em.shape(op.out, loop)
        arg_shapes = [em.shape(a, loop) for a in op.args]
        full = bool(arg_shapes) and broadcast_shape(arg_shapes) == shape
        into = em.into(op, loop)
        if not full:        # a constant, or a value broadcast to a larger shape
            rhs = NumpyPrinter({}, {a: em.acc(a, loop) for a in op.args}).doprint(
                numeric(op.attrs["expr"]))
            rhs = f"_full({rhs}, ({dim_code(shape[0])}, {dim_code(shape[1])}))"
            if into is None:
                return rhs
            return [f"{assignable(into[0])} = {rhs}" if not into[1] else f"{op.out} = {rhs}"]
        lines = numpy_expr(op.attrs["expr"], {a: em.acc(a, loop) for a in op.args},
                           em.acc(op.out, loop), into)
        if into is None and len(lines) == 1:
            return lines[0].split(" = ", 1)[1]
        return lines

    def c(self, em, op, loop):
        r, c = em.shape(op.out, loop)
        expr = numeric(op.attrs["expr"])
        shapes = {a: em.shape(a, loop) for a in op.args}
        flat = all(sh == (r, c) or sh == (1, 1) for sh in shapes.values())
        access = {}
        for a, sh in shapes.items():
            p = em.ptr(a, loop)
            if sh == (1, 1):
                access[a] = f"{p}[0]"
            elif sh == (r, c):
                access[a] = f"{p}[k]"
            elif sh[0] == 1:
                access[a] = f"{p}[cc]"
            else:
                access[a] = f"{p}[rr]"
        # per row (or per loop) the same: computed before the element loop
        once, expr, names = _c_invariants(
            em, expr, access, [a for a in op.args if access[a].endswith(("[rr]", "[0]"))],
            f"h_{op.out}_")
        body = _c_body(em, expr, {**access, **names}, f"{em.ptr(op.out, loop)}[k]")
        # omp simd: vectorise, calling the vector math functions (see prelude.c)
        if flat:
            head = f"for (int64_t k = 0; k < {em.c_size((r, c))}; k++)"
            if len(body) == 1 and not once:
                return ["#pragma omp simd", f"{head} {body[0]}"]
            loop_lines = ["#pragma omp simd", f"{head} {{"] + [f"    {b}" for b in body] + ["}"]
            return ["{"] + [f"    {x}" for x in once + loop_lines] + ["}"] if once else loop_lines
        return ([f"for (int64_t rr = 0; rr < {dim_code(r)}; rr++) {{"]
                + [f"    {x}" for x in once] + [
                 "    #pragma omp simd",
                 f"    for (int64_t cc = 0; cc < {dim_code(c)}; cc++) {{",
                 f"        const int64_t k = rr*{dim_code(c)} + cc;"]
                + [f"        {b}" for b in body] + ["    }", "}"])

    def c_batched(self, em, op, loop):
        """k directions: batched arguments are read in their direction,
        fixed ones (the forward and backward pass's) broadcast over the
        directions: rows rr, directions d, columns cc of the output."""
        r, c = em.lshape(op.out, loop)
        expr = numeric(op.attrs["expr"])
        if _rowwise(em, op, loop, expr):
            return self.c(em, op, loop)         # one flat loop over the N·K rows
        access = {"N": "((real)NB)"}            # the batch, not the N·K rows
        for a in op.args:
            ar, ac = em.lshape(a, loop)
            row, col = ("rr" if ar != "1" else "0"), ("cc" if ac != "1" else "0")
            if em.is_batched(a):
                access[a] = f"{em.ptr(a, loop)}[({row}*K + d)*{ac} + {col}]"
            else:
                access[a] = f"{em.ptr(a, loop)}[{row}*{ac} + {col}]"
        # the same for every direction and column of a row: computed once
        # per row, reciprocals too (a multiplication K times per entry)
        once, expr, names = _c_invariants(
            em, expr, access, [a for a in op.args if not em.is_batched(a)
                               and "cc" not in access[a]], f"h_{op.out}_", reciprocals=True)
        body = _c_body(em, expr, {**access, **names},
                       f"{em.ptr(op.out, loop)}[(rr*K + d)*{c} + cc]")
        loops = (["for (int64_t d = 0; d < K; d++) {",
                  "    #pragma omp simd",
                  f"    for (int64_t cc = 0; cc < {c}; cc++) {{"]
                 + [f"        {b}" for b in body] + ["    }", "}"])
        if once:
            return ([f"for (int64_t rr = 0; rr < {r}; rr++) {{"] + [f"    {x}" for x in once + loops]
                    + ["}"])
        return [f"for (int64_t rr = 0; rr < {r}; rr++)"] + [f"    {x}" for x in loops]

    def numpy_batched(self, em, op, loop):
        """k directions: batched arguments seen as (rows, K, cols), fixed
        ones broadcast over the directions ([:, None, :])."""
        r, c = em.lshape(op.out, loop)
        expr = numeric(op.attrs["expr"])
        if op.args and _rowwise(em, op, loop, expr):
            return self.numpy(em, op, loop)      # elementwise over the N·K rows
        access = {"N": "NB"}                     # the batch, not the N·K rows
        for a in op.args:
            ar, ac = em.lshape(a, loop)
            if em.is_batched(a):
                access[a] = f"{em.acc(a, loop)}.reshape({ar}, K, {ac})"
            else:
                access[a] = f"{em.acc(a, loop)}[:, None, :]" if ar != "1" else em.acc(a, loop)
        rhs = NumpyPrinter({}, access).doprint(expr)
        return f"_batched({rhs}, {r}, K, {c})"

    def batched_rule(self, op, batched) -> bool:
        return True          # batched arguments by direction, fixed ones broadcast
