"""Stage 2: a validated Spec -> every program the generated module exposes.

One table, :data:`ENTRY_POINTS`, lists the entry points: name, inputs, and
how each is derived from the forward graph (:mod:`bpgen.network`) with the
primitives' reverse and forward rules.  :func:`derive_all` runs the table and
returns plain data (:class:`Derived`): the lowered programs in table order,
plus what the runtime needs to read their outputs.  Emitters only print it.
Adding an entry point is adding one row (and its derivation function).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy as sp

from .assembly import derive_assembly
from .columns import Columns, split as split_columns
from .ir import Graph, grad, tangents
from .layers import LAYER_TYPES
from .losses import LOSSES
from .lower import Program, lower
from .meta import NOMINAL_STEPS, CurvatureLayout, CurvLayer, GradTerm, Meta, ParamTerms
from .network import Derivation, derive
from .passes.hoist_independent import hoist_independent
from .shapes import at_steps, dim_coeffs, size_coeffs
from .spec import Spec

__all__ = ["EntryPoint", "ENTRY_POINTS", "Derived", "derive_all", "structured", "program",
           "assembly", "per_sample_plan"]


@dataclass(frozen=True)
class EntryPoint:
    """A generated function: ``inputs`` among x, y, params, v (in this
    order); ``derive(spec, base)`` returns (program, metadata); ``when``
    says whether the architecture has it."""
    name: str
    inputs: tuple
    derive: Callable
    doc: str
    when: Callable = staticmethod(lambda spec: True)
    backends: tuple = ("numpy", "c")
    #: "program" (a lowered Program from the graph), "assembly" (an
    #: :class:`~bpgen.assembly.Assembly` over the curvature program's outputs:
    #: ``derive(spec, curvature program, meta)``) or "columns" (``derive``
    #: returns a :class:`~bpgen.columns.Columns`, the program split for many
    #: directions; its whole program is the entry's)
    kind: str = "program"


@dataclass
class Derived:
    """Every entry point of one architecture, as lowered programs."""
    spec: Spec
    base: Derivation                     # the forward graph, loss and gradient
    programs: dict                       # name -> Program, in table order
    entries: dict                        # name -> EntryPoint
    meta: Meta = field(default_factory=Meta)   # factor and curvature layouts
    assemblies: dict = field(default_factory=dict)   # name -> Assembly
    #: hessian_columns split for many directions (None without it)
    columns: Columns | None = None

    @property
    def element_types(self) -> dict:
        """Input variable -> its C element type where that is not ``real``:
        x's is the input kind's (``spec.input.c_type``, e.g. ``int64_t``)."""
        ctype = self.spec.input.c_type
        return {} if ctype == "real" else {self.base.x: ctype}

    def layout(self, name: str) -> list:
        """Where each output of ``name`` lies in one flat buffer:
        [(offset a, offset b, size a, size b, columns)], sizes a*N + b."""
        out, fa, fb = [], 0, 0
        if name in self.assemblies:            # outputs of fixed size
            for _, rows, cols in self.assemblies[name].outputs:
                out.append((0, fb, 0, rows * cols, cols))
                fb += rows * cols
            return out
        prog = self.programs[name]
        for o in prog.outputs:
            a, b = size_coeffs(prog.vars[o].shape)
            out.append((fa, fb, a, b, prog.vars[o].shape[1]))
            fa, fb = fa + a, fb + b
        return out


def structured(spec: Spec) -> bool:
    """True when the Hessian is assembled from its Kronecker block structure:
    every layer type declares a structure it fits (dense, flatten), and the
    input is not a sequence (recurrent weights are shared over steps)."""
    return (not spec.input.is_sequence
            and all(LAYER_TYPES[lay.type].hessian in ("kronecker", "identity")
                    for lay in spec.layers))


# ---------------------------------------------------------------------------
# the derivations; each returns (Program, metadata)

def _inputs(d: Derivation, with_y: bool = True, v: list = ()) -> list:
    return [d.x, *d.masks] + ([d.y] if with_y else []) + list(d.params.values()) + list(v)


def _forward(spec: Spec, d: Derivation):
    return lower(d.graph, "forward", _inputs(d, with_y=False), [d.output], d.n_forward), {}


def _loss(spec: Spec, d: Derivation):
    return lower(d.graph, "loss", _inputs(d), [d.loss], d.n_forward), {}


def _loss_and_grad(spec: Spec, d: Derivation):
    outs = [d.loss] + list(d.grads.values())
    return lower(d.graph, "loss_and_grad", _inputs(d), outs, d.n_forward), {}


def _seeds(g: Graph, d: Derivation) -> dict:
    return {p: g.var("v_" + p, g.vars[p].shape, "input", "V_" + g.vars[p].label)
            for p in d.params.values()}


def _hvp(spec: Spec, base: Derivation):
    """Pearlmutter's R-operator (forward mode) over the forward and backward
    pass of the exact (untruncated) loss: the tangents of the gradients."""
    d = derive(spec, exact=True)
    g = d.graph
    seeds = _seeds(g, d)
    t = tangents(g, seeds)
    outs = []
    for key in d.params:
        gv = d.grads[key]
        outs.append(t[gv] if gv in t else g.map(sp.Integer(0), base="r_" + gv,
                                                shape=g.vars[gv].shape))
    return lower(g, "hvp", _inputs(d, v=seeds.values()), outs, d.n_forward), {}


def _hessian_columns(spec: Spec, base: Derivation) -> Columns:
    """The Hessian-vector product split in two, for many directions at once:
    the ops that do not depend on v (the forward and backward pass) first,
    then those that do (the tangents), so that a backend can run the first
    part once and the second once per chunk of directions.  A loop holding
    both kinds becomes two loops over the same steps; values the tangent
    loop reads from the first are then kept for every step.  What the
    tangent part would recompute for every direction without depending on v
    (tanh(C) and the like) is computed once in the first part
    (:mod:`bpgen.passes.hoist_independent`).  Returns the split as data
    (:class:`bpgen.columns.Columns`)."""
    d = derive(spec, exact=True)
    g = d.graph
    seeds = _seeds(g, d)
    t = tangents(g, seeds)
    outs = [t[d.grads[k]] if d.grads[k] in t else
            g.map(sp.Integer(0), base="r_" + d.grads[k], shape=g.vars[d.grads[k]].shape)
            for k in d.params]
    dep = set(seeds.values())
    changed = True
    while changed:       # state reads name values defined later: to a fixed point
        changed = False
        for op in g.ops:
            if op.out not in dep and any(a in dep for a in op.args):
                dep.add(op.out)
                changed = True
    dep.update(outs)      # a gradient without a tangent: its zeros, once per direction
    hoisted = hoist_independent(g, dep)   # before the loops are twinned: runs contiguous
    twin = {}
    for lid, info in list(g.loops.items()):
        twin[lid] = len(g.loops)
        g.loops[twin[lid]] = dict(info, title=info["title"] + ", each direction")
    for op in g.ops:
        if op.out in dep and op.loop is not None:
            op.loop = twin[op.loop]
            g.vars[op.out].loop = op.loop
    g.ops = [op for op in g.ops if op.out not in dep] + [op for op in g.ops if op.out in dep]
    inputs = _inputs(d, v=seeds.values())
    # planned part by part (columns.split), not as a whole
    prog = lower(g, "hessian_columns", inputs, outs, d.n_forward, keep=hoisted, plan=False)
    at = next((i for i, op in enumerate(prog.ops) if op.out in dep), len(prog.ops))
    return split_columns(prog, len(inputs) - len(seeds), at)


def _ggn_vp(spec: Spec, base: Derivation):
    """The generalised Gauss-Newton product G v = Jᵀ H_L J v (+ λ v on the
    regularised weights), J = ∂output/∂θ, H_L = ∂²L/∂output².

    Three passes over the graph: the loss gradient w.r.t. the output
    (reverse mode through the loss ops only), the tangents of the forward
    pass and of that gradient (forward mode: R{dL/dO} = H_L·J·v because
    dL/dO depends on θ only through O), and a reverse pass from the output
    with that cotangent (Jᵀ·u)."""
    d = derive(spec, exact=True, with_grad=False)
    g = d.graph
    d_out = grad(g, d.loss, [d.output], stop={d.output})[d.output]
    seeds = _seeds(g, d)
    t = tangents(g, seeds)
    pv = list(d.params.values())
    if d_out in t:
        jtu = grad(g, None, pv, roots={d.output: t[d_out]})
    else:
        jtu = {p: g.map(sp.Integer(0), base="gv_" + p, shape=g.vars[p].shape) for p in pv}
    l2_keys = set(spec.l2_keys)
    outs = []
    for key, p in d.params.items():
        out = jtu[p]
        if spec.l2 and key in l2_keys:
            out = g.map(g.sym(out) + sp.Float(spec.l2, 17) * g.sym(seeds[p]),
                        base="gv_" + p, shape=g.vars[p].shape)
        outs.append(out)
    return lower(g, "ggn_vp", _inputs(d, v=seeds.values()), outs, d.n_forward), {}


def _grad_factors(spec: Spec, d: Derivation):
    """Outputs (U, V) with dW = Uᵀ·V for every weight matrix (the roles say
    which): the arguments of the matrix product the reverse pass forms its
    gradient with (a layer's input and its delta; over all steps for
    recurrent weights).  A table's gradient (an embedding's E or P) is a
    scatter-add of rows, ``add_rows(δ, X)`` = onehot(X)ᵀ·δ: V is δ, and U
    the one-hot matrix of each row's index, formed by the module from the
    ids (x itself, or an output) or, for a position table, from each row's
    step.  Metadata: {key: (index of U, index of V)} for a product, {key:
    (index of the ids (-1: x, -2: the row's step), index of δ, table rows)}
    for a table."""
    g = d.graph
    pairs, outs = {}, []

    def out(var, suffix):
        if g.vars[var].role != "temp":
            var = g.copy(var, base=f"{var}_{suffix}")
        if var not in outs:
            outs.append(var)
        return var

    for key in spec.factor_keys:
        p = d.params[key]
        for part in g.grad_parts.get(p, []):
            op = g.ops[g.producer[part]] if part in g.producer else None
            if op is None:
                continue
            if op.primitive.product and op.attrs["ta"] and not op.attrs["tb"]:
                pairs[key] = (out(op.args[0], "factor"), out(op.args[1], "factor"))
            elif op.prim == "add_rows":
                ids = op.args[1] if len(op.args) > 1 else None
                ids = ids if ids in (None, d.x) else out(ids, "ids")
                pairs[key] = (ids, out(op.args[0], "factor"), op.attrs["rows"])
    prog = lower(g, "grad_factors", _inputs(d), outs, d.n_forward)

    def index(u):
        return -1 if u == d.x else -2 if u is None else outs.index(u)
    return prog, {"factor_index": {k: (index(f[0]), outs.index(f[1])) + tuple(f[2:])
                                   for k, f in pairs.items()}}


def _term(g: Graph, d: Derivation, part: str, shape: tuple, keep) -> GradTerm | None:
    """The summand ``part`` of a parameter's gradient (of 2-D ``shape``) as a
    :class:`GradTerm` before its reduction over rows, or None for a summand
    that reads no row (the l2 term).  ``keep(var)`` makes ``var`` an output
    and returns its index (-1 for x)."""
    op = g.ops[g.producer[part]] if part in g.producer else None
    if op is None:
        raise NotImplementedError(f"per-sample gradients: {part} is not computed by an op")
    row_dims = [dim_coeffs(g.vars[a].shape[0]) for a in op.args]
    if all(a == 0 for a, _ in row_dims):
        return None                         # data-free: the regulariser's term
    if op.loop is not None or any(b != 0 or a == 0 for a, b in row_dims):
        raise NotImplementedError(f"per-sample gradients: {part} ({op.prim}) is not a "
                                  f"reduction over per-sample rows")
    rows = row_dims[0][0]
    layout = "time" if d.spec.input.is_sequence else "sample"
    if layout == "time" and rows not in (1, d.spec.input.steps):
        raise NotImplementedError(f"per-sample gradients: {part} has {rows} rows per sample")
    prim, cols = op.prim, g.vars[op.args[0]].shape[1]
    if prim == "matmul" and op.attrs["ta"] and not op.attrs["tb"]:
        return GradTerm("product", keep(op.args[0]), keep(op.args[1]), rows, layout)
    if prim == "sum" and op.attrs["axis"] in (0, None) and shape == (1, cols):
        return GradTerm("colsum", -1, keep(op.args[0]), rows, layout)
    if prim == "add_rows" and len(op.args) == 2:
        return GradTerm("scatter", keep(op.args[1]), keep(op.args[0]), rows, layout,
                        op.attrs["rows"])
    if prim == "add_rows" and layout == "time":
        return GradTerm("steps", -1, keep(op.args[0]), rows, layout, op.attrs["rows"])
    raise NotImplementedError(f"per-sample gradients: no per-sample form of {part} ({prim})")


def _norm_choice(key: str, shape: tuple, terms: tuple, shared: frozenset = frozenset()
                 ) -> ParamTerms:
    """How a parameter's per-sample norm is computed, from the shapes: the
    Gram form ⟨U_n U_nᵀ, V_n V_nᵀ⟩ costs r²(a + d) multiply-adds per sample
    (r rows per sample, U (r, a), V (r, d); a factor whose Gram matrices
    another parameter forms already, in ``shared`` as (output index, rows),
    costs nothing more: a delta shared by an lstm's Wx and Wh), forming the
    gradient U_nᵀ V_n costs r·a·d; an embedding table's (onehot(X_n)ᵀ D_n,
    V rows) r²(d + 1) against V·d + r·d.  Sums (biases, gains, positions)
    are always formed: r·d.  Several summands of different kinds are formed
    and added."""
    a, d = shape
    r = sum(t.rows for t in terms)
    kinds = {t.kind for t in terms}
    if kinds == {"product"}:
        one = len(terms) == 1
        gram = r * r * (1 + (0 if one and (terms[0].u, r) in shared else a)
                        + (0 if one and (terms[0].v, r) in shared else d))
        explicit = r * a * d
    elif kinds == {"scatter"} and len(terms) == 1:
        gram, explicit = r * r * (d + 1), terms[0].size * d + r * d
    else:
        gram, explicit = -1, sum(t.rows * (a * d if t.kind == "product" else d) for t in terms)
    # steps: any: r = T, so both costs are polynomials in T, compared (and
    # stated) at NOMINAL_STEPS
    gram, explicit = at_steps(gram, NOMINAL_STEPS), at_steps(explicit, NOMINAL_STEPS)
    norm = "gram" if 0 <= gram < explicit else "explicit"
    return ParamTerms(key, shape, terms, norm, gram, explicit)


def _norm_choices(params: list) -> tuple:
    """Every parameter's :func:`_norm_choice` ([(key, shape, terms)]), to a
    fixed point: a Gram matrix one parameter forms is free for the others
    that share its factor (the runtime computes it once per call)."""
    shared: frozenset = frozenset()
    while True:
        plans = tuple(_norm_choice(key, shape, terms, shared) for key, shape, terms in params)
        grams = frozenset((f, p.terms[0].rows) for p in plans if p.norm == "gram" and len(p.terms) == 1
                          and p.terms[0].kind == "product" and p.terms[0].rows != 1
                          for f in (p.terms[0].u, p.terms[0].v))
        if grams <= shared:
            return plans
        shared |= grams


def _grad_terms(spec: Spec, d: Derivation):
    """Every parameter's data gradient before its reduction over rows: the
    loss (output 0), then the factors of each summand (:class:`GradTerm`),
    read from the reverse pass's own reductions (``g.grad_parts``): a
    product Uᵀ·V (``matmul`` with a transposed first factor), column sums
    (``sum``), a scatter-add of rows (``add_rows``).  A row belongs to one
    sample, so sample n's gradient is the reduction over its rows alone:
    what per_sample_grads, per_sample_grad_norms and clipped_grad form in
    the runtime (bpgen/backends/common/runtime/per_sample.py).  The
    gradient is loss_and_grad's (truncated if bptt says so).  Metadata:
    ``grad_terms`` ({key: :class:`ParamTerms`}), the norm's form chosen
    per parameter from the shapes (:func:`_norm_choice`)."""
    g = d.graph
    outs = [d.loss]

    def keep(var):
        if var == d.x:
            return -1
        if g.vars[var].role != "temp":
            var = g.copy(var, base=f"{var}_term")
        if var not in outs:
            outs.append(var)
        return outs.index(var)

    params, missing = [], {}
    for key, p in d.params.items():
        shape = g.vars[p].shape
        try:
            terms = tuple(t for t in (_term(g, d, part, shape, keep)
                                      for part in g.grad_parts.get(p, [])) if t is not None)
        except NotImplementedError as exc:      # the per-sample functions refuse, named
            missing[key], terms = str(exc), ()
        params.append((key, shape, terms))
    prog = lower(g, "grad_terms", _inputs(d), outs, d.n_forward)
    plans = tuple(ParamTerms(pt.key, pt.shape, (), "unsupported", -1, -1, missing[pt.key])
                  if pt.key in missing else pt for pt in _norm_choices(params))
    return prog, {"grad_terms": plans}


def _curvature(spec: Spec, base: Derivation):
    """What the Kronecker-structured Hessian is assembled from, per sample
    (row): for every layer whose type has the ``kronecker`` structure its
    input, f'(Z) and f''(Z) (SymPy's first and second derivative of the
    activation), q = ∂L/∂A and δ = ∂L/∂Z; and the loss's curvature w.r.t.
    the output: ℓ'' (SymPy's second derivative of the per-unit loss) for the
    elementwise losses, the softmax probabilities for the cross-entropy.
    The layer types say which variables these are and which parameters
    are the weight and the bias (:meth:`~bpgen.layers.base.LayerType.
    kronecker_parts`, by role).  Metadata: a :class:`CurvatureLayout`."""
    d = derive(spec, exact=True)
    g = d.graph
    outs, layers, names = [], [], []

    def keep(var):
        if g.vars[var].role != "temp":
            var = g.copy(var, base=f"{var}_copy")
        if var not in outs:
            outs.append(var)
        return outs.index(var)

    z = sp.Symbol("z")
    for layer in spec.layers:
        kind = LAYER_TYPES[layer.type]
        if kind.hessian == "identity":
            kind.identity_check(layer)
        if kind.hessian != "kronecker":
            continue
        parts = kind.kronecker_parts(g, layer)
        f, pre, label = parts.f(z), g.sym(parts.pre), g.vars[parts.pre].label
        d1 = g.map(sp.diff(f, z).subs(z, pre), base=f"{layer.name}_d1",
                   shape=g.vars[parts.pre].shape, label=f"f'({label})")
        d2 = g.map(sp.diff(f, z, 2).subs(z, pre), base=f"{layer.name}_d2",
                   shape=g.vars[parts.pre].shape, label=f"f''({label})")
        q = g.cotangents.get(parts.output)
        delta = g.cotangents.get(parts.pre, q)
        if q is None:
            q = delta
        names.append(layer.name)
        layers.append((parts.weight, parts.bias, keep(parts.input), keep(d1), keep(d2), keep(q),
                       keep(delta)))
    # the loss's curvature (its form, softmax or diagonal, is the loss's data)
    curv = LOSSES[spec.loss.type].curvature(g, d.loss_vars)
    loss_index = keep(curv)
    prog = lower(g, "curvature", _inputs(d), outs, d.n_forward)
    return prog, {"curvature": CurvatureLayout(
        tuple(CurvLayer(name, *row) for name, row in zip(names, layers)), loss_index)}


ENTRY_POINTS = (
    EntryPoint("forward", ("x", "params"), _forward, "the network output"),
    EntryPoint("loss", ("x", "y", "params"), _loss, "the loss"),
    EntryPoint("loss_and_grad", ("x", "y", "params"), _loss_and_grad,
               "the loss and its gradient (truncated BPTT if the file says so)"),
    EntryPoint("hvp", ("x", "y", "params", "v"), _hvp, "the exact Hessian times v"),
    EntryPoint("ggn_vp", ("x", "y", "params", "v"), _ggn_vp, "Gauss-Newton times v"),
    EntryPoint("grad_factors", ("x", "y", "params"), _grad_factors,
               "(U, V) with dW = Uᵀ·V per weight matrix"),
    EntryPoint("grad_terms", ("x", "y", "params"), _grad_terms,
               "the loss, and every gradient's summands before the reduction over rows"),
    EntryPoint("curvature", ("x", "y", "params"), _curvature,
               "per-sample parts of the structured Hessian", when=structured),
    EntryPoint("hessian", ("x", "y", "params"),
               lambda spec, curv, meta: derive_assembly(spec, curv, meta, "full"),
               "the exact Hessian, assembled from its Kronecker block structure",
               when=structured, kind="assembly"),
    EntryPoint("hessian_blocks", ("x", "y", "params"),
               lambda spec, curv, meta: derive_assembly(spec, curv, meta, "blocks"),
               "every layer's diagonal block of the exact Hessian", when=structured,
               kind="assembly"),
    # hmp of every network, hessian and hessian_diag of those without the
    # dense structure
    EntryPoint("hessian_columns", ("x", "y", "params"), _hessian_columns,
               "Hessian columns, the forward and backward pass shared by all",
               kind="columns"),
)


def derive_all(spec: Spec) -> Derived:
    """Every entry point of ``spec``: the derivation stage of the pipeline."""
    base = derive(spec)
    programs, entries, meta, assemblies = {}, {}, Meta(), {}
    columns = None
    for entry in ENTRY_POINTS:
        if not entry.when(spec):
            continue
        entries[entry.name] = entry
        if entry.kind == "assembly":
            assemblies[entry.name] = entry.derive(spec, programs["curvature"], meta)
            continue
        if entry.kind == "columns":
            columns = entry.derive(spec, base)
            programs[entry.name] = columns.program
            continue
        prog, extra = entry.derive(spec, base)
        programs[entry.name] = prog
        meta.update(extra)
    return Derived(spec, base, programs, entries, meta, assemblies, columns)


def program(spec: Spec, name: str, base: Derivation | None = None) -> Program:
    """One entry point's program (for ``bpgen show``), derived from ``base``
    (default: a fresh derivation of ``spec``)."""
    entry = next(e for e in ENTRY_POINTS if e.name == name)
    made = entry.derive(spec, base if base is not None else derive(spec))
    return made.program if entry.kind == "columns" else made[0]


def assembly(spec: Spec, name: str = "hessian", base: Derivation | None = None):
    """One assembly entry point (``hessian``, ``hessian_blocks``) of a
    structured architecture, for ``bpgen show --hessian``."""
    entry = next(e for e in ENTRY_POINTS if e.name == name and e.kind == "assembly")
    curv, extra = _curvature(spec, base if base is not None else derive(spec))
    return entry.derive(spec, curv, Meta(**extra))


def per_sample_plan(spec: Spec, base: Derivation | None = None) -> tuple:
    """(grad_terms program, its :class:`ParamTerms` per parameter): how the
    per-sample functions form every gradient, for ``bpgen show``."""
    prog, extra = _grad_terms(spec, base if base is not None else derive(spec))
    return prog, extra["grad_terms"]
