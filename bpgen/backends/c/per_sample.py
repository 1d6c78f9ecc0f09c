"""The C functions ``per_sample_grads``, ``per_sample_grad_norms`` and
``clipped_grad``: the grad_terms program, then every sample's gradient
formed (per_sample_grads), or every parameter's per-sample squared norm in
the form the derivation chose for it (``meta.grad_terms``,
:class:`~bpgen.meta.ParamTerms`: Gram or formed, stated next to each call)
and (clipped_grad) the clip factors and Uᵀ·diag(c)·V with the module's
products, or, for a parameter whose per-sample gradients the norm pass
forms and keeps, cᵀ·G over them: one C call each.  runtime/per_sample.c holds the loops (pasted
after the helpers); this file only decides which call, with which factors
and sizes, each parameter gets.

Outputs, one buffer: per_sample_grads every parameter's (N, *shape) block
in the flat parameter order; the others the loss, the N norms and
(clipped_grad) the clipped gradient in the flat parameter order.
Workspace: the grad_terms outputs, then the larger of grad_terms' own
workspace and the per-sample scratch (the Gram matrices, N·r² each, one
per factor and row count however many parameters read it; one
parameter's formed gradient; the N clip factors; clipped_grad's kept
formed gradients, N of each, when together they take at most the rest of
the workspace per sample at T = 1, so at most double it: otherwise none is
kept and every parameter is Uᵀ·diag(c)·V).

An architecture with a summand these calls do not take (:class:`Unsupported`:
a parameter with several summands, a table's ids that are not x's tokens,
a product whose factors cannot be scaled in place) gets none of them; its
per-sample functions then run in the Python runtime
(bpgen/backends/common/runtime/per_sample.py), which forms the same terms.
No architecture of the test suites is such a case today."""
from __future__ import annotations

import math

from ...derivation import Derived
from ...meta import ParamTerms
from ...shapes import at_steps, ceil8, code, plus, upper
from ..common.emitter import offset_code
from .emitter import cname, size_params

__all__ = ["per_sample_functions", "Unsupported"]

class Unsupported(Exception):
    """A summand the C per-sample functions do not take (the Python route serves it)."""


def _shape(shape) -> str:
    return "(" + ", ".join(code(d) if not isinstance(d, str) else d for d in shape) + ")"


def _rows_n(rows) -> str:
    """rows·N as C (rows an int or T)."""
    return "N" if rows == 1 else f"{code(rows)}*N"


class _Factors:
    """The grad_terms outputs (and x) as the per-sample calls name them."""

    def __init__(self, derived: Derived):
        prog = derived.programs["grad_terms"]
        self.prog, self.x = prog, derived.base.x
        self.x_type = derived.element_types.get(self.x, "real")

    def name(self, i: int) -> str:
        return cname(self.x if i < 0 else self.prog.outputs[i])

    def cols(self, i: int) -> int:
        return self.prog.vars[self.x if i < 0 else self.prog.outputs[i]].shape[1]

    def real(self, i: int) -> str:
        if i < 0 and self.x_type != "real":
            raise Unsupported(f"a product with x of {self.x_type} elements")
        return self.name(i)

    def ids(self, i: int) -> str:
        """A scatter's ids: x's integers (an output's ids stay in Python)."""
        if i >= 0 or self.x_type != "int64_t":
            raise Unsupported("a table's ids that are not x's int64 tokens")
        return self.name(i)


def _one_term(plan: ParamTerms):
    if plan.norm == "unsupported":
        raise Unsupported(f"{plan.key}: {plan.missing}")
    if len(plan.terms) != 1:
        raise Unsupported(f"{plan.key}: {len(plan.terms)} summands")
    return plan.terms[0]


def _formed(plan: ParamTerms) -> bool:
    """Whether the norm pass forms ``plan``'s per-sample gradients (one at a
    time into g, or all of them into a slot: ``_norm_lines``)."""
    t = _one_term(plan)
    return (t.kind == "product" and plan.norm == "explicit"
            or t.kind == "colsum" and t.rows != 1 or t.kind == "scatter" and plan.norm != "gram")


def _norm_lines(plan: ParamTerms, f: _Factors, grams: dict, made: set,
                kept: str = "") -> list:
    """The calls adding ``plan``'s per-sample squared norms to sq, in its form.
    ``grams``: {(output, rows): slot}, the Gram matrices (made once: ``made``);
    ``kept``: where a formed parameter's N gradients stay (else each one
    overwrites the last in g)."""
    t = _one_term(plan)
    time = int(t.layout == "time")
    d = f.cols(t.v)
    g = f"{kept}, {math.prod(plan.shape)}" if kept else "g, 0"
    if t.kind == "product":
        a, u, v = f.cols(t.u), f.real(t.u), f.name(t.v)
        if plan.norm == "explicit":
            return [f"bpg_ps_form_product(N, {code(t.rows)}, {time}, {a}, {u}, {d}, {v}, {g}, "
                    f"sq);"]
        if t.rows == 1:
            return [f"bpg_ps_sq_outer(N, {a}, {u}, {d}, {v}, sq);"]
        lines = []
        for i, c in ((t.u, a), (t.v, d)):
            if (i, t.rows) not in made:
                made.add((i, t.rows))
                lines.append(f"bpg_ps_gram(N, {code(t.rows)}, {time}, {c}, {f.real(i)}, "
                             f"{grams[i, t.rows]});")
        return lines + [f"bpg_ps_sq_grams(N, {code(t.rows)}, {grams[t.u, t.rows]}, "
                        f"{grams[t.v, t.rows]}, sq);"]
    v = f.name(t.v)
    if t.kind == "colsum" and t.rows == 1 or t.kind == "steps":
        # one row per sample, or a position table (sample n's rows are its gradient)
        return [f"bpg_ps_sq_rows(N, {code(t.rows)}, {d}, {v}, sq);"]
    if t.kind == "colsum":
        return [f"bpg_ps_form_colsum(N, {code(t.rows)}, {time}, {d}, {v}, {g}, sq);"]
    ids = f.ids(t.u)
    if plan.norm == "gram":
        return [f"bpg_ps_sq_scatter_gram(N, {code(t.rows)}, {time}, {ids}, {d}, {v}, sq);"]
    return [f"bpg_ps_form_scatter(N, {code(t.rows)}, {time}, {ids}, {t.size}, {d}, {v}, {g}, "
            f"sq);"]


def _scaled(plans, f: _Factors) -> dict:
    """{output: (rows, layout)}: the factors clipped_grad scales in place by
    each row's sample's clip factor, one of every product's two (the delta
    where it may be), the V of every sum; x is never scaled (an input), nor
    a table's ids.  A product whose two factors both (or neither) end up
    scaled has no in-place form: Unsupported."""
    terms = [_one_term(p) for p in plans]
    scaled = {t.v: (t.rows, t.layout) for t in terms if t.kind != "product" or t.u < 0}
    for t in terms:
        if t.kind == "product" and t.u not in scaled and t.v not in scaled:
            scaled[t.v] = (t.rows, t.layout)
    for t in terms:
        both = (t.u in scaled) + (t.v in scaled)
        if t.kind == "product" and both != 1 or t.kind == "scatter" and t.u in scaled:
            raise Unsupported(f"no in-place scaling: output {t.u} and {t.v} of a product")
    return scaled


def _clip_lines(plan: ParamTerms, f: _Factors, offset: int) -> list:
    """The call writing ``plan``'s clipped gradient (its factors scaled) at
    grads + offset."""
    t = _one_term(plan)
    d, v, at = f.cols(t.v), f.name(t.v), f"grads + {offset}"
    r = _rows_n(t.rows)
    if t.kind == "product":
        return [f"bpg_gemm_tn({f.cols(t.u)}, {d}, {r}, {f.real(t.u)}, {v}, {at});"]
    if t.kind == "colsum":
        return [f"bpg_colsum({r}, {d}, {v}, {at});"]
    if t.kind == "scatter":
        return [f"bpg_ps_scatter_sum({r}, {f.ids(t.u)}, {t.size}, {d}, {v}, {at});"]
    return [f"bpg_ps_steps_sum(N, {code(t.rows)}, {t.size}, {d}, {v}, {at});"]


def _each_lines(plan: ParamTerms, f: _Factors, offset: int) -> list:
    """The call writing every sample's gradient of ``plan`` (N, *shape) at
    out + offset·N (without the factor N)."""
    t = _one_term(plan)
    time, d, v, at = int(t.layout == "time"), f.cols(t.v), f.name(t.v), f"out + {offset}*N"
    size = math.prod(plan.shape)
    if t.kind == "product":
        return [f"bpg_ps_form_product(N, {code(t.rows)}, {time}, {f.cols(t.u)}, "
                f"{f.real(t.u)}, {d}, {v}, {at}, {size}, NULL);"]
    if t.kind == "colsum":
        return [f"bpg_ps_form_colsum(N, {code(t.rows)}, {time}, {d}, {v}, {at}, {size}, NULL);"]
    if t.kind == "scatter":
        return [f"bpg_ps_form_scatter(N, {code(t.rows)}, {time}, {f.ids(t.u)}, {t.size}, {d}, "
                f"{v}, {at}, {size}, NULL);"]
    return [f"bpg_ps_form_steps(N, {code(t.rows)}, {t.size}, {d}, {v}, {at});"]


def per_sample_functions(derived: Derived, terms_fn: dict, used: set) -> list:
    """The three C functions (dicts as the emitter's ``_function`` makes);
    :class:`Unsupported` when a summand has no C form here.  ``terms_fn``:
    the grad_terms function (its workspace); ``used``: gets the helpers
    the calls need."""
    f = _Factors(derived)
    plans = [p for p in derived.meta.grad_terms]
    prog = f.prog
    layout = derived.layout("grad_terms")
    # the Gram slots: one per (factor, rows) that a Gram-form parameter reads
    slots = {}
    for p in plans:
        t = _one_term(p)
        if p.norm == "gram" and t.kind == "product" and t.rows != 1:
            for i in (t.u, t.v):
                slots.setdefault((i, t.rows), None)
    # the workspace: grad_terms' outputs, then its own workspace or the scratch
    last = layout[-1]
    oa, ob = plus(last[0], last[2]), ceil8(plus(last[1], last[3]))
    ga, gb = 0, 0
    grams, decls_scratch = {}, []
    for (i, rows), _ in slots.items():
        grams[i, rows] = f"gram_{len(grams)}"
        decls_scratch.append(f"real *const {grams[i, rows]} = ws + "
                             f"{offset_code(plus(oa, ga), ob + gb)};  /* (N, {code(rows)}, "
                             f"{code(rows)}): {f.name(i)}'s per-sample Gram matrices */")
        ga = plus(ga, rows * rows)
    g_size = ceil8(max(math.prod(p.shape) for p in plans))
    decls_scratch.append(f"real *const g = ws + {offset_code(plus(oa, ga), ob + gb)};  "
                         f"/* ({g_size},): one sample's formed gradient */")
    gb += g_size
    decls_scratch.append(f"real *const clip = ws + {offset_code(plus(oa, ga), ob + gb)};  "
                         f"/* (N,): the clip factors */")
    ga = plus(ga, 1)
    wa, wb = terms_fn["ws"]
    ws = (plus(oa, upper(wa, ga)), ob + upper(wb, gb))
    # clipped_grad keeps the gradients its norm pass forms, N of each formed
    # parameter after the scratch, while they take at most as much as the
    # rest of the workspace (at T = 1) per sample: the clipped gradient is
    # then Σ_n c_n·g_n, one pass over them, instead of a weighted product over
    # the factors' rows (ps_cnn_digits' conv kernels: 1,248 of 9,138)
    kept, ka = {}, ga
    formed = [p for p in plans if _formed(p)]
    if formed and sum(math.prod(p.shape) for p in formed) <= at_steps(ws[0], 1):
        for p in formed:
            kept[p.key] = (f"kept_{len(kept)}", f"real *const kept_{len(kept)} = ws + "
                           f"{offset_code(plus(oa, ka), ob + gb)};  /* (N, "
                           f"{math.prod(p.shape)}): {p.key}'s per-sample gradients */")
            ka = plus(ka, math.prod(p.shape))
    ws_clip = (plus(oa, upper(wa, ka)), ob + upper(wb, gb))
    decls = [f"real *const {cname(var)} = ws + {offset_code(a, b)};  "
             f"/* {var} {_shape(prog.vars[var].shape)} */"
             for var, (a, b, _, _, _) in zip(prog.outputs, layout)]

    call = (f"bpg_grad_terms(N{', T' if 'int64_t T' in size_params(prog) else ''}, "
            f"{', '.join(cname(a) for a in prog.inputs)}, ws, ws + {offset_code(oa, ob)});")
    terms = {"head": ["the forward and backward pass without the weight gradients' "
                      "reductions (grad_terms), its outputs at the start of ws"],
             "lines": [call]}
    def norms_of(keep: dict) -> list:
        made: set = set()
        lines = ["for (int64_t n = 0; n < N; n++) sq[n] = 0;"]
        for p in plans:
            lines += ([f"/* {p.key}: {p.reason()}{'; kept' if p.key in keep else ''} */"]
                      + _norm_lines(p, f, grams, made, keep.get(p.key, ("",))[0]))
        lines.append("bpg_ps_norms(N, sq);")
        return [dict(terms, lines=terms["lines"] + [f"out[0] = {cname(prog.outputs[0])}[0];"]),
                {"head": ["sq_n: every sample's squared gradient norm without the batch's "
                          "1/N², parameter by parameter in the form chosen at generation, "
                          "then norm_n = N·√sq_n"
                          + ("; the formed gradients kept (N of each)" if keep else "")],
                 "lines": lines}]

    norms = norms_of({})
    scaled = _scaled(plans, f)  # (Unsupported when a product has no in-place form)
    try:                        # the factors only the parameters not kept read
        scaled = _scaled([p for p in plans if p.key not in kept], f)
    except Unsupported:         # (fewer sums scaled, so some product's both): keep none
        kept, ws_clip = {}, ws
    scale_lines = [f"bpg_ps_scale_rows(N, {code(rows)}, {int(lay == 'time')}, {f.cols(i)}, "
                   f"{f.name(i)}, clip);" for i, (rows, lay) in scaled.items()]
    clip_lines, each_lines, offset = [], [], 0
    for p in plans:
        size = math.prod(p.shape)
        clip_lines += [f"/* {p.key} */"] + (
            [f"bpg_gemm_tn(1, {size}, N, clip, {kept[p.key][0]}, grads + {offset});"]
            if p.key in kept else _clip_lines(p, f, offset))
        each_lines += [f"/* {p.key} */"] + _each_lines(p, f, offset)
        offset += size
    each_lines += ["/* the batch's 1/N in the deltas undone */",
                   f"bpg_ps_scale({offset}*N, (real)N, out);"]
    used.update({"gemm_tn", "colsum"})
    inputs = [f"const {derived.element_types.get(a, 'real')} *restrict {cname(a)}"
              for a in prog.inputs]
    sq = "real *const sq = out + 1;  /* (N,): squared norms, then the norms */"
    made = {
        "per_sample_grads": ([], [terms, {"head": ["every sample's gradient formed, "
                                                   "parameter by parameter: (N, *shape) each"],
                                          "lines": each_lines}]),
        "per_sample_grad_norms": ([sq], norms),
        "clipped_grad": (
            [sq, "real *const grads = out + 1 + N;  /* the clipped gradient */"]
            + [decl for _, decl in kept.values()],
            norms_of(kept)
            + [{"head": ["c_n = min(1, max_norm / norm_n)"
                         + ("; unless every c_n is 1, one factor of every product (and a "
                            "sum's rows) not kept scaled in place: diag(c)·F"
                            if scale_lines else "")],
                "lines": (["if (bpg_ps_clip_factors(N, max_norm, sq, clip)) {"]
                          + ["    " + line for line in scale_lines] + ["}"] if scale_lines
                          else ["bpg_ps_clip_factors(N, max_norm, sq, clip);"])},
               {"head": ["the clipped gradient, parameter by parameter: "
                         "Uᵀ·diag(c)·V, 1ᵀ·diag(c)·D, onehot(X)ᵀ·diag(c)·D"
                         + ("; a kept parameter's Σ_n c_n·g_n = cᵀ·G" if kept else "")],
                "lines": clip_lines}])}
    out = []
    for name, (more, blocks) in made.items():
        params = (size_params(prog) + inputs + (["real max_norm"] if name == "clipped_grad"
                                                else [])
                  + ["real *restrict out", "real *restrict ws"])
        out.append({"name": name, "decls": decls + more + decls_scratch,
                    "ws": ws_clip if name == "clipped_grad" else ws,
                    "blocks": blocks, "signature": f"void bpg_{name}({', '.join(params)})"})
    return out


def c_functions(derived: Derived, functions: list, used: set) -> tuple:
    """(the functions, "") or ([], the reason the per-sample functions stay in
    the Python runtime).  ``functions``: the module's others (grad_terms')."""
    terms_fn = next((f for f in functions if f["name"] == "grad_terms"), None)
    if terms_fn is None:
        return [], "no grad_terms function"
    helpers: set = set()
    try:
        made = per_sample_functions(derived, terms_fn, helpers)
    except Unsupported as exc:
        return [], str(exc)
    used |= helpers
    return made, ""
