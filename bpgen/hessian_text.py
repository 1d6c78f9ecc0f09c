"""``bpgen show --hessian`` (and section 6 of ``bpgen doc``): the block
structure of the exact Hessian, then the derived Hessian-vector product.

Every sentence and equation is one :mod:`bpgen.mathtext` object printed as
text or LaTeX.  Parameters are named by the layer types: a ``kronecker``
layer's weight and bias come from
:meth:`~bpgen.layers.base.LayerType.kronecker_parts` (by role), a
recurrent layer's from its ``ParamSpec`` roles, an attention layer's blocks
from the variables it registered (:class:`~bpgen.layers.base.AttentionParts`,
printed by :mod:`bpgen.hessian_attention`, also inside blocks); nothing here
spells a parameter's name.
"""
from __future__ import annotations

from .derivation import assembly, program, structured
from .equations import labels, op_equation, tex_names, tex_roman
from .hessian_attention import attention_items
from .layers import LAYER_TYPES
from .layers.base import AttentionParts
from .mathtext import (Cat, Eq, Fn, Frac, Infix, Item, Key, Label, Paren, Raw, Sentence,
                       Sub, Sum, Sym, T, Words)
from .network import derive
from .losses import LOSSES
from .show import _shape, _spec, shape_text

__all__ = ["hessian_items", "render_hessian"]

# ---- the notation's symbols ---------------------------------------------------

LAM = Sym("Λ", r"\Lambda")
NABLA = Sym("∇²L", r"\nabla^{2} L")
PARTIAL, PARTIAL2 = Sym("∂", r"\partial "), Sym("∂²", r"\partial^{2} ")
L, L_N = Sym("L"), Sub("L", "n")
LAMBDA_I = Sym("λ I", r"\lambda I")
K, N, X, O, V = (Sym(s) for s in ("k", "n", "x", "o", "v"))
THETA = Sym("θ", r"\theta")


def dot(*a):
    return Infix("·", r" \cdot ", *a)


def odot(*a):
    return Infix(" ⊙ ", r" \odot ", *a)


def otimes(*a):
    return Infix(" ⊗ ", r" \otimes ", *a)


def plus(*a):
    return Infix(" + ", " + ", *a)


def delta(x):
    return Cat(Sym("δ", r"\delta "), x)


def sq(x):
    return Sym(x.text() + "²", x.tex() + "^{2}")


def partial(num, den, second: bool = False, inline: bool = False):
    """∂num/∂den (∂²num/∂den² with ``second``)."""
    return Frac(Cat(PARTIAL2 if second else PARTIAL, num),
                Cat(PARTIAL, sq(den) if second else den), inline=inline)


def lam(index):
    return Sub(LAM, index)


def roman(name: str):
    """A layer name as a subscript."""
    return Sym(name, tex_roman(name))


def block(key_a: str, key_b: str):
    """∇²L[key_a, key_b]."""
    return Cat(NABLA, "[", Key(key_a), ", ", Key(key_b), "]")


z, a, W, b = (lambda i, s=s: Sub(s, i) for s in "zaWb")
Z_K, A_K, A_KM1 = z("k"), a("k"), a("k-1")
LAM_OUT = lam(Sym("out", r"\mathrm{out}"))


def _row(label: str):
    """A matrix label's one-sample row: ``A_l0`` -> ``a_l0``."""
    return Label(label[:1].lower() + label[1:])


# ---- the items ------------------------------------------------------------------

def _preamble(spec, l2: bool) -> list:
    steps = spec.input.steps
    per_step = (steps is not None and len(spec.output_shape) == 2
                and spec.output_shape[0] == steps and spec.loss.steps != "last")
    n_text, n_tex = ("(N T)", "N T") if per_step else ("N", "N")
    curv_text, curv_tex = (LOSSES[spec.loss.type].curvature_text,
                           LOSSES[spec.loss.type].curvature_tex)
    curv = Raw(curv_text.format(n=n_text), curv_tex.replace("{n}", n_tex))
    name = Sym(spec.name, r"\mathrm{" + spec.name.replace("_", r"\_") + "}")
    f1, f2 = (Fn(Sym(t), Z_K, tex_name=x) for t, x in (("f_k'", "f'_k"), ("f_k''", "f''_k")))
    w_next, lam_next = W("k+1"), lam("k+1")
    d_k = Sub("D", "k")
    return [
        Item("title", Sentence(name, ": structure of the exact Hessian ",
                               Eq(NABLA, partial(L, THETA, second=True, inline=True)), ", ",
                               Eq(THETA, Fn("flatten", Sym("params", r"\mathrm{params}"))))),
        Item("text", Sentence(
            "Per sample ", N, ", in row vectors: a lowercase letter is one row of the matrix "
            "of the same name (", X, " of ", Sym("X"), ", ", Z_K, " of ", Sub("Z", "k"), ", ",
            A_K, " of ", Sub("A", "k"), ", ", O, " of the network output); layer ", K,
            " computes ", Z_K, " from the previous layer's ", A_KM1, " (", Eq(a("0"), X),
            "), and the Hessian is a sum over the samples",
            *((" (plus ", LAMBDA_I, " on the weight blocks, from l2)") if l2 else ()), ":")),
        Item("eq", Eq.list(Eq(Z_K, plus(dot(A_KM1, W("k")), b("k"))),
                           Eq(A_K, Fn(Sym("f_k", "f_k"), Z_K, tex_name="f_k")),
                           Eq(NABLA, plus(Sum("n", Sub(NABLA, "n")), *([LAMBDA_I] * l2))))),
        Item("text", Sentence(
            "The curvature with respect to a pre-activation, ",
            Eq(lam("k"), partial(L_N, Z_K, second=True, inline=True)),
            ", starts at the loss and is propagated backwards like ", delta(Z_K), ":")),
        Item("eq", Eq(LAM_OUT, partial(L_N, O, second=True), curv)),
        Item("eq", Eq(lam("k"), plus(dot(d_k, w_next, lam_next, T(w_next), d_k),
                                     Fn("diag", odot(f2, delta(A_K)), big=True)))),
        Item("text", Sentence(
            "with ", dot(w_next, lam_next, T(w_next)), " replaced by ", LAM_OUT,
            " for the output layer, ", Eq(d_k, Fn("diag", f1)), " and ",
            Eq(delta(A_K), partial(L, A_K, inline=True)),
            " (the second term is what Gauss-Newton drops); further")),
        Item("eq", Eq.list(Eq(delta(Z_K), partial(L, Z_K)),
                           Eq(Sub("J", Sym("k→l", r"k \to l")), partial(a("l-1"), Z_K)),
                           Cat(Eq(lam("kl"), dot(partial(z("l"), Z_K), lam("l"))),
                               Sym("  ", r" \quad "),
                               Paren(Eq(lam("kk"), lam("k")), big=False)))),
    ]


def _dense_items(spec, dense: list) -> list:
    """Kronecker blocks of the kronecker layers ``dense`` [(layer, parts,
    input row)] when the whole Hessian is not assembled."""
    items = [Item("text", Sentence(
        "Within a layer, Kronecker blocks (the flat order of ", Sym("W"), " is (in, units) "
        "row-major, so the input factor comes first):"))]
    reg = [LAMBDA_I] if spec.l2 else []
    for lay, parts, row in dense:
        w, bias = parts.weight, parts.bias
        (fi, fo), lk = spec.param_shapes[w], lam(roman(lay.name))
        items += [
            Item("eq", Eq(block(w, w), plus(Sum("n", otimes(Paren(dot(T(row), row)), lk)),
                                            *reg)), f"{fi * fo} × {fi * fo}"),
            Item("eq", Eq(block(w, bias), Sum("n", otimes(T(row), lk))), f"{fi * fo} × {fo}"),
            Item("eq", Eq(block(bias, bias), Sum("n", lk)), f"{fo} × {fo}")]
    if len(dense) < 2:
        return items
    ent = lambda x, i: Sub(Paren(x), i)     # noqa: E731  (M)_ij
    items += [
        Item("text", Sentence(
            "Across layers ", Infix(" < ", " < ", "k", "l"), ": a Kronecker term plus a "
            "commutation-type (Bishop ", Sym("δ", r"\delta"), ") term that no sum of Kronecker "
            "products gives; entry by entry, with ", ent(Sym("M"), "ij"), " the entry ",
            Sym("(i, j)"), " of ", Sym("M"), ":")),
        Item("eq", Eq(Frac(Cat(PARTIAL2, L), Cat(PARTIAL, ent(W("k"), "pq"), Sym(" ", r"\, "),
                                                 PARTIAL, ent(W("l"), "ij"))),
                      Sum("n", Cat(ent(A_KM1, "p"), Sym(" · ", " "), Paren(plus(
                          Cat(ent(a("l-1"), "i"), Sym(" · ", r"\, "), ent(lam("kl"), "qj")),
                          Cat(ent(Sub("J", Sym("k→l", r"k \to l")), "qi"), Sym(" · ", r"\, "),
                              ent(delta(z("l")), "j")))))))),
    ]
    for (first, p1, r1), (second, p2, r2) in zip(dense, dense[1:]):
        k, m = first.name, second.name
        lam_km = lam(Sym(f"{k},{m}", f"{tex_roman(k)},{tex_roman(m)}"))
        kron = Sum("n", otimes(Paren(dot(T(r1), r2)), lam_km))
        commuted = Sum("n", otimes(T(r1), Paren(otimes(Sub("D", roman(k)),
                                                       delta(z(roman(m)))))))
        items.append(Item("eq", Cat(Sym("e.g. ", ""),
                                    Eq(block(p1.weight, p2.weight), plus(kron, commuted)),
                                    Sym("  (commuted)", r"\quad \text{(commuted)}"))))
    return items


def _recurrent_items(lay) -> list:
    k, lk = lay.name, roman(lay.name)
    weights = [p for p in lay.params if p.role == "weight"]
    shared = [p for p in lay.params if p.role in ("weight", "recurrent_weight")]
    recurrent = [p for p in lay.params if p.role == "recurrent_weight"]

    def names(ps):
        out = []
        for i, p in enumerate(ps):
            out += ([", "] if i else []) + [Key(f"{k}.{p.name}")]
        return out
    g_s, g_t = Fn(Sym("g"), Sym("s"), tex_name="g"), Fn(Sym("g"), Sym("t"), tex_name="g")
    lam_st = Fn(lam(lk), Sym("s,t"), tex_name=lam(lk).tex())
    key = f"{k}.{weights[0].name}"
    x_s, x_t = (Fn(X, Sym(t), tex_name="x") for t in "st")
    return [
        Item("text", Sentence(
            "The recurrent layer ", lk, " shares ", *names(shared), " and its biases over the "
            "steps, so its blocks are sums over pairs of steps ", Sym("(s, t)"), ", with ",
            Eq(lam_st, Frac(Cat(PARTIAL2, L_N), Cat(PARTIAL, g_s, Sym("", r"\, "), PARTIAL, g_t),
                            inline=True)),
            " for the row ", Sym("g"), " of its gate pre-activations (every step's state "
            "depends on every earlier step's use of ", *names(recurrent), "):")),
        Item("eq", Eq(block(key, key), plus(
            Sum("n", Sum("s", Sum("t", otimes(Paren(dot(T(x_s), x_t)), lam_st)))),
            Cat(Words("cross-time "), Sym("δ", r"\delta "), Words("-terms through "),
                Fn(Sub("h", lk), Sym("t-1"), tex_name=Sub("h", lk).tex()))))),
    ]


def hessian_items(arch) -> list:
    """The content of ``bpgen show --hessian``: :class:`~bpgen.mathtext.Item`
    objects ("title", "text": a sentence; "eq": an equation and the shape it
    writes), each printable as text or LaTeX (the LaTeX prose is ASCII with
    ``$...$`` math, so it is Markdown too)."""
    spec = _spec(arch)
    d = derive(spec)
    items = _preamble(spec, bool(spec.l2))
    types = [(lay, LAYER_TYPES[lay.type]) for lay in spec.layers]
    dense = []
    for lay, kind in types:
        if kind.hessian == "kronecker":
            parts = kind.kronecker_parts(d.graph, lay)
            dense.append((lay, parts, _row(d.graph.vars[parts.input].label)))
    if structured(spec):
        items += _assembly_items(spec, d)
    elif dense:
        items += _dense_items(spec, dense)
    for lay, kind in types:
        if kind.recurrent:
            items += _recurrent_items(lay)
    keys = {var: key for key, var in d.params.items()}
    for parts in d.graph.layer_parts.values():      # nested in blocks, too
        if isinstance(parts, AttentionParts):
            items += attention_items(parts, d.graph.vars, keys, bool(spec.l2))
    other = [lay for lay, kind in types if kind.hessian is None and not kind.recurrent]
    if other:
        which = []
        for i, lay in enumerate(other):
            which += ([", "] if i else []) + [roman(lay.name), f": {lay.type}"]
        items.append(Item("text", Sentence(
            "Other layers (", *which, "): their blocks come from Hessian-vector products (one "
            "forward and backward pass, then the tangent statements below for many columns "
            "at once).")))
    items += _hvp_items(spec)
    return items


def _hvp_items(spec) -> list:
    hv, r = dot(NABLA, V), lambda x: Cat(Sym("R", r"\mathcal{R}"), Sym("{", r"\{"), x,
                                          Sym("}", r"\}"))
    eps = Sym("ε", r"\varepsilon")
    items = [Item("text", Sentence(
        "bpgen computes ", hv, " without forming ", NABLA, ": the R-operator ",
        Eq(r(Sym("V")), Cat(Frac(Sym("d"), Cat(Sym("d"), eps)), " ",
                            Fn(Sym("V"), Cat(THETA, " + ", eps, " ", V), tex_name="V"),
                            Sym(" at ε = 0", r"\big|_{\varepsilon = 0}"))),
        " (forward mode) over the derived forward and backward pass, so that ",
        r(delta(Sym("W"))), " is the block of ", Sym("W"), " of ", hv, " (", Sub("V", "W"),
        ": the block of ", V, " for ", Sym("W"), ").  The derived program (the statements "
        "that compute a tangent or read ", V, "):"))]
    prog = program(spec, "hvp")
    names = labels(prog)
    tn = tex_names(names)
    for op in prog.ops:
        if op.out.startswith("r_") or any(x.startswith("v_") for x in op.args):
            items.append(Item("eq", Raw(op_equation(op, names), op_equation(op, tn, latex=True)),
                              _shape_pair(prog, op)))
    items.append(Item("text", Sentence(hv, " for each parameter:")))
    for key, o in zip(spec.param_shapes, prog.outputs):
        items.append(Item("eq", Eq(Cat(Paren(hv, big=False), "[", Key(key), "]"),
                                   Raw(names.get(o, o), tn.get(o, o)))))
    items.append(Item("text", Sentence(
        "hmp(", Sym("V"), "), and hessian() where it is formed from Hessian-vector products, "
        "run the forward and backward pass once and the tangent statements above for a chunk "
        "of ", Sym("K"), " columns of ", Sym("V"), " at once: each tangent ",
        Sym("r × c", r"r \times c"), " is stored ", Sym("r × K × c", r"r \times K \times c"),
        " (the directions as extra columns), so a product with a factor that does not depend "
        "on ", V, " is one product ", Sym("K"), " times larger.")))
    return items


def _assembly_items(spec, d) -> list:
    """The derived assembly of ``hessian`` (every layer dense): one item per
    batched op, its equation (in the notation's labels) and the shape it
    writes."""
    asm = assembly(spec, "hessian", d).with_labels()
    a_t = Sym("ã", r"\tilde a")
    items = [Item("text", Sentence(
        "bpgen assembles ", NABLA, " from these blocks as follows: the derived assembly "
        "program of hessian(), one statement per batched operation (", Sym("[n]"),
        ": sample ", N, "; ", Eq(a_t, Sym("[a, 1]")), ", so that a layer's bias is the weight "
        "of a constant input and its ", Sym("(W, b)"), " block is one Kronecker block; ",
        Sym("H[rows; cols]", r"H[\mathrm{rows}; \mathrm{cols}]"),
        ": the block of those parameters' rows and columns):"))]
    for op in asm.ops:
        items.append(Item("eq", op.equation(asm), _op_shape(asm, op)))
    return items


def _op_shape(asm, op) -> str:
    """What an assembly op writes, as "rows × cols" (per sample: "N × ...")."""
    size = getattr(op, "sizes", None)
    if size is not None:
        pk1, ck, pl1, cl = size(asm)
        return f"{pk1 * ck} × {pl1 * cl}"
    if op.name == "mirror":
        return f"{op.ncols} × {op.nrows}"
    if op.name == "add_l2":
        return f"{op.stop - op.start} × {op.stop - op.start}"
    return " × ".join(str(dim) for dim in asm.t(op.writes()[0]).shape)


def _shape_pair(prog, op) -> str:
    return shape_text(_shape(prog, op)).strip("()").replace(", ", " × ")


def render_hessian(arch, latex: bool = False) -> str:
    """The block structure of the exact Hessian of ``arch`` in matrix form,
    then the derived Hessian-vector product (the R-operator program); as
    text, or as a LaTeX fragment (``\\usepackage{amsmath}``)."""
    items = hessian_items(arch)
    out: list = []
    if not latex:
        for item in items:
            if item.kind == "title":
                out += [item.text()]
            elif item.kind == "text":
                out += ["", item.text()]
            else:
                text = item.text()
                out.append(f"  {text:<62s} ({item.shape})" if item.shape else f"  {text}")
        return "\n".join(out) + "\n"
    rows: list = []

    def flush():
        if rows:
            out.append(r"\begin{align*}")
            out.append(" \\\\\n".join(rows))
            out.append(r"\end{align*}")
            rows.clear()

    for item in items:
        if item.kind == "title":
            out += ["% bpgen show --hessian --latex: a fragment for a LaTeX document with "
                    "\\usepackage{amsmath}; notation: docs/notation.md",
                    r"\subsection*{" + item.tex() + "}"]
        elif item.kind == "text":
            flush()
            out += ["", item.tex()]
        else:
            tex = item.tex()
            lhs, eq, rhs = tex.partition(" = ")
            row = f"{lhs} &= {rhs}" if eq and lhs.count("{") == lhs.count("}") else f"& {tex}"
            rows.append(row + (" && " + item.shape.replace("×", r"\times")
                               if item.shape else ""))
    flush()
    return "\n".join(out) + "\n"
