"""The Hessian blocks of a self-attention layer in matrix form, for ``bpgen
show --hessian`` and ``bpgen doc`` (:mod:`bpgen.hessian_text` adds them for
every layer that registered :class:`~bpgen.layers.base.AttentionParts`).

The loss depends on the layer's parameters only through its output A[n]
(T, F) of each sample n, so every block of the exact Hessian for them is

    H[θ; θ'] = Σ_n (∂A[n]/∂θ)ᵀ·Λ[n]·∂A[n]/∂θ' + Σ_n Δ[θ; θ'][n]

(Ormaniec, Dangel and Singh, ICLR 2025: the outer-product term and the
functional term), with Λ[n] = ∂²L/∂A[n]² what the rest of the network gives
back and Δ the gradient δA[n] contracted with A's second derivatives.  The
composition is the layer's own (Q, K, V projections, per-head block products
``seqmm``, a row softmax, the output projection); the Jacobians follow from
the product rule through it, and the only curvature of its own is the
softmax's: J(p) = diag(p) - pᵀ·p and its derivative dJ(p)[u].

Every equation is an :class:`Expr`: it prints itself as text and LaTeX (a
:mod:`bpgen.mathtext` node) *and* evaluates itself with NumPy
(:meth:`Expr.value`), so the formulas printed are the formulas
``tests/test_hessian_attention.py`` evaluates on a tiny model and compares
with the module's ``hessian`` (to 1e-10).  Names are the layer's graph labels
without the layer's subscript (``Q`` for ``Q_attn_mha``), taken from the
variables the layer type registered with
:meth:`~bpgen.layers.base.LayerType.attention` (its hook, as ``kronecker``
is a dense layer's), and parameter keys from the derivation.
"""
from __future__ import annotations

import math

import numpy as np

from .equations import tex_roman
from .mathtext import (Cat, Eq, Fn, Frac, Infix, Item, Key, Label, Node, Paren, Sentence, Sub,
                       Sym, T)

__all__ = ["Expr", "AttentionBlocks", "attention_items", "short_names", "softmax_jacobian",
           "softmax_jacobian_derivative", "commutation"]


# ---- evaluable expressions ----------------------------------------------------

class Expr(Node):
    """A matrix expression: ``text()``, ``tex()`` (through ``node``) and
    ``value(env)`` (NumPy, from the named matrices in ``env``)."""

    node: Node

    def text(self):
        return self.node.text()

    def tex(self):
        return self.node.tex()

    def value(self, env: dict) -> np.ndarray:
        raise NotImplementedError


class Var(Expr):
    """A matrix of ``env`` (key ``key``) printed as ``node``."""

    def __init__(self, node, key: str):
        self.node, self.key = node if isinstance(node, Node) else Sym(node), key

    def value(self, env):
        return np.atleast_2d(np.asarray(env[self.key], dtype=float))


class Apply(Expr):
    """An operator over operands: ``fn`` evaluates it from their values."""

    def __init__(self, node: Node, fn, *args: Expr):
        self.node, self.fn, self.args = node, fn, args

    def value(self, env):
        return self.fn(env, *(a.value(env) for a in self.args))


def dot(*xs):
    def fn(env, *v):
        out = v[0]
        for m in v[1:]:
            out = out @ m
        return out
    return Apply(Infix("·", r" \cdot ", *xs), fn, *xs)


def kron(a, b):
    return Apply(Infix(" ⊗ ", r" \otimes ", a, b), lambda env, x, y: np.kron(x, y), a, b)


def had(a, b):
    return Apply(Infix(" ⊙ ", r" \odot ", a, b), lambda env, x, y: x * y, a, b)


def minus(*xs):
    return Apply(Infix(" - ", " - ", *xs), lambda env, *v: v[0] - sum(v[1:]), *xs)


def plus(*xs):
    return Apply(Infix(" + ", " + ", *xs), lambda env, *v: sum(v[1:], v[0]), *xs)


def tr(x):
    return Apply(T(x), lambda env, v: v.T, x)


def par(x):
    return Apply(Paren(x, big=False), lambda env, v: v, x)


def over_sqrt_d(x):
    """x / √d."""
    return Apply(Frac(x, Sym("√d", r"\sqrt{d}"), inline=True),
              lambda env, v: v / math.sqrt(env["d"]), x)


def diag(x):
    return Apply(Fn("diag", x), lambda env, v: np.diag(v.ravel()), x)


def eye(size: str):
    """I_T, I_F, I_d (the size from ``env``)."""
    return Apply(Sub("I", size), lambda env: np.eye(_size(env, size)))


def commutation(m: int, n: int) -> np.ndarray:
    """C_(m,n): C·vec(M) = vec(Mᵀ) for an (m, n) matrix M, vec row-major."""
    c = np.zeros((m * n, m * n))
    for i in range(m):
        for j in range(n):
            c[j * m + i, i * n + j] = 1.0
    return c


def comm(m: str, n: str):
    return Apply(Sym(f"C_({m},{n})", f"C_{{{m},{n}}}"),
              lambda env: commutation(_size(env, m), _size(env, n)))


def _size(env, size: str) -> int:
    return {"T": env["T"], "F": env["F"], "d": env["d"], "F+1": env["F"] + 1}[size]


def ones_col(x):
    """[X, 1]: a column of ones appended."""
    return Apply(Paren(Infix(", ", ", ", x, "1"), big=False, brackets="[]"),
              lambda env, v: np.hstack([v, np.ones((v.shape[0], 1))]), x)


def head_cols(x):
    """Column block j (head j) of x: ``x[j]``."""
    return Apply(Cat(Paren(x, big=False) if isinstance(x, Apply) else x, "[j]"),
              lambda env, v: v[:, env["j"] * env["d"]:(env["j"] + 1) * env["d"]], x)


def head_rows(x, base: Node):
    """Row block j (head j) of x: ``x[j,:]``."""
    return Apply(Cat(base, "[j,:]"),
              lambda env, v: v[env["j"] * env["d"]:(env["j"] + 1) * env["d"], :], x)


class RowFn(Expr):
    """A matrix function of one row ``p`` (and a direction ``u``), such as
    J(p): ``name`` prints it as a function (``J(p)``), ``at_t`` at row t
    (``J(p_t)``), and the expression ``body`` is what it is."""

    def __init__(self, name: Node, at_t: Node, body: Expr):
        self.name, self.at_t, self.body, self.node = name, at_t, body, body.node

    def value(self, env):
        return self.body.value(env)


class Rows(Expr):
    """Row by row: ``f`` at each row t of ``p`` (and ``u``) as the blocks of a
    block-diagonal matrix (⊕_t f(p_t)), or with ``stack`` as the rows of a
    matrix."""

    def __init__(self, f: RowFn, p: Expr, u: Expr | None = None, stack: bool = False):
        self.f, self.p, self.u, self.stack = f, p, u, stack
        self.node = f.at_t if stack else Cat(Sym("⊕_t ", r"\bigoplus_t "), f.at_t)

    def value(self, env):
        p = self.p.value(env)
        u = self.u.value(env) if self.u is not None else p
        rows = [self.f.value(dict(env, p=p[i:i + 1], u=u[i:i + 1])) for i in range(len(p))]
        if self.stack:
            return np.vstack(rows)
        t, k = p.shape
        out = np.zeros((t * k, t * k))
        for i, block in enumerate(rows):
            out[i * k:(i + 1) * k, i * k:(i + 1) * k] = block
        return out


# ---- the softmax: its Jacobian and the Jacobian's derivative ---------------------

P_ROW, U_ROW = Var("p", "p"), Var("u", "u")
U_BAR = Apply(Sym("ū", r"\bar{u}"),
              lambda env, p, u: u - (u @ p.T) * np.ones_like(u), P_ROW, U_ROW)
DJ = Sym("dJ", r"\mathrm{d}J")


def softmax_jacobian() -> RowFn:
    """J(p) = ∂p/∂s = diag(p) - pᵀ·p for a row s and its softmax p."""
    return RowFn(Fn("J", Sym("p"), tex_name="J"), Fn("J", Sym("p_t"), tex_name="J"),
                 minus(diag(P_ROW), dot(tr(P_ROW), P_ROW)))


def softmax_jacobian_derivative() -> RowFn:
    """dJ(p)[u]: the derivative of J(p) when the scores move by u (p moves by
    u·J(p) = p ⊙ ū), diag(p ⊙ ū) - (p ⊙ ū)ᵀ·p - pᵀ·(p ⊙ ū), ū = u - (u·pᵀ) 1ᵀ.
    The third derivative of the softmax is symmetric, so dJ(p)[g] is also
    Σ_i g_i ∂²p_i/∂s²: the second-order term contracted with a gradient g."""
    q = had(P_ROW, U_BAR)
    return RowFn(Cat(DJ, Sym("(p)[u]")), Cat(DJ, Sym("(p_t)[δp_t]", r"(p_t)[\delta p_t]")),
                 minus(diag(q), dot(tr(par(q)), P_ROW), dot(tr(P_ROW), par(q))))


PAIR = Sym("[θ; θ']", r"[\theta;\ \theta']")
PAIR_SWAPPED = Sym("[θ'; θ]", r"[\theta';\ \theta]")


# ---- the blocks of one layer -------------------------------------------------

def _tilde(label: str) -> Sym:
    """W̃q from Wq: the weight with its bias as one more row."""
    tex = Label(label).tex()
    return Sym(label[0] + "\u0303" + label[1:], r"\tilde{" + tex + "}")


class AttentionBlocks:
    """The equations of one attention layer, per sample n and head j.

    ``names``: the short labels of the layer's variables (``"Q"``, ``"K"``,
    ``"V"``, ``"P"``, ``"AV"``, ``"A"``, ``"Wo"``, ...).  :attr:`defs` are
    (env key, equation, Expr) in the order they are evaluated;
    :attr:`score` and :attr:`jacobians` map "q", "k" ("v", "o") to
    ∂S[n,j]/∂W̃· and ∂A[n]/∂W̃·; :attr:`gauss_newton` the summands of the
    blocks of W̃v[j] and W̃o; :attr:`deltas` maps pairs ("q", "k") to
    Δ[n] (the pairs not listed are zero)."""

    def __init__(self, names: dict):
        lab = {k: Label(v) for k, v in names.items()}
        n, nj = "[n]", "[n,j]"
        x, q, k, v, p = (Var(Cat(lab[s], idx), s) for s, idx in
                         (("X", n), ("Q", nj), ("K", nj), ("V", nj), ("P", nj)))
        av, da, wo = Var(Cat(lab["AV"], n), "AV"), Var(Cat(lab["δA"], n), "dA"), \
            Var(lab["Wo"], "Wo")
        self.lam = Var(Cat(Sym("Λ", r"\Lambda "), n), "Lam")
        sym = {key: Var(Cat(node, idx), key) for key, node, idx in (
            ("Xt", Sym("X̃", r"\tilde{X}"), n), ("Ot", Sym("Õ", r"\tilde{O}"), n),
            ("dAV", lab["δAV"], nj), ("dP", lab["δP"], nj), ("dS", lab["δS"], nj),
            ("Jp", Sym("𝒥", r"\mathcal{J}"), nj), ("Psi", Sym("Ψ", r"\Psi "), nj))}
        woj = head_rows(wo, lab["Wo"])
        self.woj_name = Cat(lab["Wo"], "[j,:]")
        jac, djac = softmax_jacobian(), softmax_jacobian_derivative()
        dp_t = Var(Sym("δp_t", r"\delta p_t"), "u")
        ds_row = RowFn(Sym("δs"), Infix("·", r" \cdot ", dp_t, jac.at_t), dot(dp_t, jac))
        defs = [
            ("Xt", ones_col(x)),
            ("Ot", ones_col(av)),
            ("dAV", head_cols(dot(da, tr(wo)))),
            ("dP", dot(sym["dAV"], tr(v))),
            ("Jp", Rows(jac, p)),
            ("Psi", Rows(djac, p, sym["dP"])),
            ("dS", Rows(ds_row, p, sym["dP"], stack=True)),
        ]
        self.defs = [(key, Eq(sym[key], e), e) for key, e in defs]
        xt, jp, psi, ds = sym["Xt"], sym["Jp"], sym["Psi"], sym["dS"]
        self.params = {c: _tilde(names[f"W{c}"]) for c in "qkvo"}
        s_name = Cat(lab["S"], nj)

        def d_s(c):
            return Frac(Cat(Sym("∂", r"\partial "), s_name),
                        Cat(Sym("∂", r"\partial "), self.params[c], "[j]"), inline=True)

        def d_a(c, j="[j]"):
            return Frac(Cat(Sym("∂", r"\partial "), lab["A"], n),
                        Cat(Sym("∂", r"\partial "), self.params[c], j), inline=True)
        self.score = {
            "q": over_sqrt_d(par(kron(xt, k))),
            "k": over_sqrt_d(dot(comm("T", "T"), par(kron(xt, q)))),
        }
        s_var = {c: Var(d_s(c), f"S{c}") for c in "qk"}
        s_t = {c: tr(par(s_var[c])) for c in "qk"}
        back = par(kron(eye("T"), par(dot(tr(woj), tr(v)))))
        self.jacobians = {
            "q": dot(back, jp, s_var["q"]),
            "k": dot(back, jp, s_var["k"]),
            "v": kron(par(dot(p, xt)), tr(woj)),
            "o": kron(sym["Ot"], eye("F")),
        }
        self.jacobian_names = {c: d_a(c, "" if c == "o" else "[j]") for c in "qkvo"}
        # A[n] is linear in W̃v[j] and in W̃o: their blocks are the outer-product
        # term alone, a Kronecker sandwich of Λ[n] (one sample's summand)
        pxt = par(dot(p, xt))
        self.gauss_newton = {
            "v": dot(par(kron(tr(pxt), woj)), self.lam, par(kron(pxt, tr(woj)))),
            "o": dot(par(kron(tr(sym["Ot"]), eye("F"))), self.lam, par(kron(sym["Ot"], eye("F")))),
        }
        self.score_names = {c: d_s(c) for c in "qk"}
        # The functional term of a pair is where the two parameters' paths
        # meet at a nonlinear op of the composition, contracted with that op's
        # cotangent: the softmax (Ψ, for Q and K through S), and the three
        # bilinear products S = Q·Kᵀ/√d (δS: Wq with Wk), AV = P·V (δAV: Wq,
        # Wk with Wv, through 𝒥) and A = AV·Wo (δA: Wq, Wk, Wv with Wo).
        # Projections and biases are linear; different heads never meet.
        self.deltas = {
            ("q", "q"): dot(s_t["q"], psi, s_var["q"]),
            ("q", "k"): plus(dot(s_t["q"], psi, s_var["k"]),
                             over_sqrt_d(par(kron(par(dot(tr(xt), ds, xt)), eye("d"))))),
            ("k", "k"): dot(s_t["k"], psi, s_var["k"]),
            ("q", "v"): dot(s_t["q"], jp, par(kron(sym["dAV"], xt)), comm("F+1", "d")),
            ("k", "v"): dot(s_t["k"], jp, par(kron(sym["dAV"], xt)), comm("F+1", "d")),
            ("q", "o"): dot(s_t["q"], jp, par(kron(da, v)), comm("d", "F")),
            ("k", "o"): dot(s_t["k"], jp, par(kron(da, v)), comm("d", "F")),
            ("v", "o"): dot(par(kron(par(dot(tr(pxt), da)), eye("d"))), comm("d", "F")),
        }
        self.softmax = (jac, djac, ds_row)

    def evaluate(self, env: dict) -> dict:
        """``env`` (X, AV, δA, Wo, Λ: per sample; Q, K, V, P: head j; T, F,
        d, j) completed with the definitions, the score Jacobians (Sq, Sk)
        and the output Jacobians (Jq, Jk, Jv, Jo)."""
        env = dict(env)
        for key, _, e in self.defs:
            env[key] = e.value(env)
        for c, e in self.score.items():
            env[f"S{c}"] = e.value(env)
        for c, e in self.jacobians.items():
            env[f"J{c}"] = e.value(env)
        return env

    def block_name(self, a: str, b: str, idx: str = "[n]"):
        """Δ[W̃a[j]; W̃b[j]][n] (Wo's rows of head j: Wo[j,:])."""
        def one(c):
            return self.woj_name if c == "o" else Cat(self.params[c], "[j]")
        return Cat(Sym("Δ", r"\Delta "), "[", one(a), "; ", one(b), "]", idx)


# ---- the items of bpgen show --hessian ---------------------------------------------

def short_names(parts, graph_vars: dict) -> dict:
    """The labels of the layer's variables without its subscript."""
    def short(var):
        label = graph_vars[var].label or var
        tail = "_" + parts.layer
        return label[:-len(tail)] if label.endswith(tail) else label
    names = {"Q": short(parts.queries), "K": short(parts.keys), "V": short(parts.values),
             "P": short(parts.weights), "AV": short(parts.heads_out), "A": short(parts.output),
             "S": short(parts.scores), "X": "X"}
    names.update({f"W{c}": short(w) for c, w in zip("qkvo", parts.weight_params)})
    for s in ("A", "AV", "P", "S"):
        names["δ" + s] = "δ" + names[s]
    return names


def attention_items(parts, graph_vars: dict, keys: dict, l2: bool = False) -> list:
    """The items of one attention layer (``keys``: graph variable -> its
    parameter key; ``l2``: the loss has an l2 term, λ I on the weights)."""
    names = short_names(parts, graph_vars)
    blocks = AttentionBlocks(names)
    params = {**{f"W{c}": w for c, w in zip("qkvo", parts.weight_params)},
              **{f"b{c}": b for c, b in zip("qkvo", parts.bias_params)}}
    t, f, h = parts.steps, parts.features, parts.heads
    d = f // h
    lay = Sym(parts.layer, tex_roman(parts.layer))
    inp = Label(graph_vars[parts.input].label or parts.input)

    def keys_of(*short):
        out = []
        for i, s in enumerate(short):
            out += ([", "] if i else []) + [Key(keys[params[s]])]
        return out

    def name(key):
        return Label(graph_vars[params[key]].label)
    tilde = blocks.params
    jac, djac, ds_row = blocks.softmax
    p_ = Sym("p")
    items = [
        Item("text", Sentence(
            "The attention layer ", lay, " (", str(h), " head", "s" if h > 1 else "", ", d = ",
            str(d), "; below its variables without the subscript, ", Label(names["Q"]), " for ",
            Label(graph_vars[parts.queries].label), "; ",
            Cat(Sym("X"), "[n]") if inp.text() == "X" else Eq(Cat(Sym("X"), "[n]"),
                                                              Cat(inp, "[n]")),
            " its input for sample ", Sym("n"), ", ", Sym("T × F", r"T \times F"),
            " with the steps as rows; vec is row-major, like the flat order of a weight): "
            "every parameter acts through the layer's output ", Cat(Label(names["A"]), "[n]"),
            " alone, so each block of its Hessian is an outer-product term plus a functional "
            "term (Ormaniec, Dangel and Singh, ICLR 2025), with ",
            Eq(Cat(Sym("Λ", r"\Lambda "), "[n]"),
               Frac(Cat(Sym("∂²", r"\partial^{2} "), Sym("L")),
                    Cat(Sym("∂", r"\partial "), Label(names["A"]), "[n]", Sym("²", "^{2}")),
                    inline=True)),
            " (", Sym("T F × T F", r"T F \times T F"), ") what the layers after it give back "
            "and the gradient ", Cat(Label(names["δA"]), "[n]"), " contracted with the "
            "output's second derivatives:")),
        Item("eq", Eq(Cat(Sym("H"), PAIR),
                      Infix(" + ", " + ", Cat(Sym("Σ_n ", r"\sum_n "), Paren(
                          Frac(Cat(Sym("∂", r"\partial "), Label(names["A"]), "[n]"),
                               Cat(Sym("∂", r"\partial "), Sym("θ", r"\theta")), inline=True),
                          big=False), Sym("ᵀ", r"^{\top}"), Sym("·", r" \cdot "),
                          blocks.lam.node, Sym("·", r" \cdot "),
                          Frac(Cat(Sym("∂", r"\partial "), Label(names["A"]), "[n]"),
                               Cat(Sym("∂", r"\partial "), Sym("θ'", r"\theta'")),
                               inline=True)),
                          Cat(Sym("Σ_n ", r"\sum_n "), Sym("Δ", r"\Delta "), PAIR, "[n]"),
                          *([Sym("λ I", r"\lambda I")] if l2 else [])))),
        Item("text", Sentence(
            *(("(", Sym("λ I", r"\lambda I"), " from l2 on the weights' rows of the diagonal "
               "blocks) ") if l2 else ()),
            "for ", Sym("θ, θ'", r"\theta, \theta'"), " among ",
            Eq(Cat(tilde["q"], "[j]"), Cat(Paren(Cat(name("Wq"), "; ", name("bq")),
                                                 big=False, brackets="[]"), "[j]")),
            " (the weight with its bias as one more row, so that the bias is the weight of a "
            "constant input; column block ", Sym("j"), ": head ", Sym("j"), "; the rows of ",
            *keys_of("Wq", "bq"), " in head ", Sym("j"), "'s columns), ",
            Cat(tilde["k"], "[j]"), ", ", Cat(tilde["v"], "[j]"), " likewise and ",
            Eq(tilde["o"], Paren(Cat(name("Wo"), "; ", name("bo")), big=False,
                                 brackets="[]")),
            " (", *keys_of("Wo", "bo"), "). The softmax over the keys of a row ", Sym("s"),
            " of scores, ", Eq(p_, Fn("softmax", Sym("s"))),
            " (a row of ", Cat(Label(names["P"]), "[n,j]"), "; a masked key has ",
            Eq(p_, Sym("0")), ", so its row and column of ", jac.name, " are zero), has "
            "the Jacobian and, as its second-order term, the Jacobian's derivative when the "
            "scores move by ", Sym("u"), " (", p_, " moves by ",
            Eq(Cat(Sym("u"), Sym("·", r" \cdot "), jac.name), had(P_ROW, U_BAR)),
            "; the third derivative of the softmax is symmetric, so ",
            Cat(Sym("dJ", r"\mathrm{d}J"), Sym("(p)[g]")), " is also ",
            Sym("Σ_i g_i ∂²p_i/∂s²", r"\sum_i g_i\, \partial^{2} p_i / \partial s^{2}"),
            ", the second derivatives contracted with a gradient ", Sym("g"), "):")),
        Item("eq", Eq(jac.name, Frac(Cat(Sym("∂", r"\partial "), p_),
                                     Cat(Sym("∂", r"\partial "), Sym("s")), inline=True), jac),
             f"{t} × {t}"),
        Item("eq", Eq.list(Eq(djac.name, djac), Eq(U_BAR, Cat(
            Sym("u - (u·pᵀ) 1ᵀ", r"u - (u \cdot p^{\top})\, \mathbf{1}^{\top}")))),
            f"{t} × {t}"),
        Item("text", Sentence(
            "Per sample ", Sym("n"), " and head ", Sym("j"), " (", Sym("p_t"), ", ",
            Sym("δp_t", r"\delta p_t"), ": row ", Sym("t"), " of ",
            Cat(Label(names["P"]), "[n,j]"), ", ", Cat(Label(names["δP"]), "[n,j]"),
            "; ", Sym("⊕_t", r"\bigoplus_t"), " the block-diagonal matrix of its ",
            Sym("T"), " blocks; ", Sym("C_(m,n)", r"C_{m,n}"), " the commutation matrix, ",
            Eq(Cat(Sym("C_(m,n)", r"C_{m,n}"), Sym("·", r" \cdot "), Fn("vec", Sym("M"))),
               Fn("vec", Sym("Mᵀ", r"M^{\top}"))), " for ", Sym("M"), " ",
            Sym("(m, n)"), "; ", Cat(Label(names["Wo"]), "[j,:]"),
            " the rows of head ", Sym("j"), " of ", Label(names["Wo"]), "):"))]
    shapes = {"Xt": f"{t} × {f + 1}", "Ot": f"{t} × {f + 1}", "dAV": f"{t} × {d}",
              "dP": f"{t} × {t}", "Jp": f"{t * t} × {t * t}", "Psi": f"{t * t} × {t * t}",
              "dS": f"{t} × {t}"}
    for key, eq, _ in blocks.defs:
        if key == "dS":
            eq = Eq(Cat(Sym("δs_t", r"\delta s_t"), Sym(" (row t of ", r"\text{ (row } t "
                                                        r"\text{ of } "),
                        Cat(Label(names["δS"]), "[n,j]"), Sym(")", r"\text{)}")), ds_row.at_t)
        items.append(Item("eq", eq, shapes[key]))
    wide = f"{(f + 1) * d}"
    items.append(Item("text", Sentence(
        "The Jacobians of the scores ", Cat(Label(names["S"]), "[n,j]"), " and of the "
        "output (", Eq(Cat(Label(names["S"]), "[n,j]"),
                      Frac(Infix("·", r" \cdot ", Cat(Label(names["Q"]), "[n,j]"),
                                 T(Cat(Label(names["K"]), "[n,j]"))),
                           Sym("√d", r"\sqrt{d}"), inline=True)), "), by the product "
        "rule through the composition (the masked scores' derivative is zero, and ",
        Sym("𝒥", r"\mathcal{J}"), " zeroes it again):")))
    for c in "qk":
        items.append(Item("eq", Eq(blocks.score_names[c], blocks.score[c]),
                          f"{t * t} × {wide}"))
    for c in "qkvo":
        cols = f"{(f + 1) * f}" if c == "o" else wide
        items.append(Item("eq", Eq(blocks.jacobian_names[c], blocks.jacobians[c]),
                          f"{t * f} × {cols}"))
    items.append(Item("text", Sentence(
        "The output is linear in ", Cat(tilde["v"], "[j]"), " and in ", tilde["o"],
        ", so their blocks have no functional term: Gauss-Newton-like Kronecker products "
        "around ", blocks.lam.node, " (with a per-step loss right after the layer, ",
        blocks.lam.node, " is block-diagonal over the steps and ", Cat(Sym("H"), "[",
                                                                       tilde["o"], "; ",
                                                                       tilde["o"], "]"),
        " the sum over the steps of the dense layer's Kronecker blocks):")))
    gn_name = {"v": Cat(tilde["v"], "[j]"), "o": tilde["o"]}
    gn_size = {"v": wide, "o": f"{(f + 1) * f}"}
    for c, e in blocks.gauss_newton.items():
        items.append(Item("eq", Eq(Cat(Sym("H"), "[", gn_name[c], "; ", gn_name[c], "]"),
                                   Cat(Sym("Σ_n ", r"\sum_n "), e)),
                          f"{gn_size[c]} × {gn_size[c]}"))
    items.append(Item("text", Sentence(
        "The functional terms, per head (zero between different heads, and ",
        blocks.block_name("v", "v", ""), ", ", Cat(Sym("Δ", r"\Delta "), "[", tilde["o"], "; ",
                                                   tilde["o"], "]"),
        ", and on the row of the output bias and the other heads' rows of ",
        Label(names["Wo"]), "; ", Eq(Cat(Sym("Δ", r"\Delta "), PAIR_SWAPPED),
                                     Cat(Sym("Δ", r"\Delta "), PAIR, Sym("ᵀ", r"^{\top}"))),
        "); for one head they are the blocks of Ormaniec, Dangel and Singh:")))
    sizes = {"q": wide, "k": wide, "v": wide, "o": f"{d * f}"}
    for (a, b), e in blocks.deltas.items():
        items.append(Item("eq", Eq(blocks.block_name(a, b), e), f"{sizes[a]} × {sizes[b]}"))
    items.append(Item("text", Sentence(
        "bpgen computes these blocks from Hessian-vector products (the tangent statements "
        "below); the test suite evaluates the equations above on tiny models and compares "
        "them with hessian().")))
    return items
