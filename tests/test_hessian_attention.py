"""The attention blocks ``bpgen show --hessian`` and ``bpgen doc`` print
(bpgen/hessian_attention.py) are right: the very expressions printed are
evaluated with NumPy on tiny attention networks (one and two heads, causal
or not, every step or the last one scored, a diagonal and a softmax loss
curvature) and the Hessian they give, outer-product terms through the
printed Jacobians plus the printed functional terms, equals the module's
exact ``hessian`` and ``hessian_blocks`` (1e-10); the softmax Jacobian J(p)
and its derivative dJ(p)[u] equal SymPy's derivatives of the layer's own
composition (the graph ops between its scores and its weights; 1e-12).  Then the
printing: show --hessian (text and LaTeX) and doc name every block on the
example transformer, and the HTML page renders them."""
import math
import os

import numpy as np
import pytest
import sympy as sp

from bpgen.check import rel_err, sample_point
from bpgen.cli import main
from bpgen.doc import document, markdown
from bpgen.doc_html import to_html
from bpgen.hessian_attention import (AttentionBlocks, commutation, short_names,
                                     softmax_jacobian, softmax_jacobian_derivative)
from bpgen.hessian_text import render_hessian
from bpgen.layers.base import AttentionParts
from bpgen.losses import LOSSES
from bpgen.network import derive
from bpgen.spec import load_spec

from conftest import ROOT
from test_latex import check_equation, latex_equations, markdown_equations

TRANSFORMER = os.path.join(ROOT, "examples", "tiny_transformer.yaml")


def _arch(name, heads, causal, loss, f=4, t=3, pre=False):
    layers = [{"type": "attention", "name": "att", "heads": heads, "causal": causal}]
    if pre:            # the attention's input is then a layer's output, not x
        layers.insert(0, {"type": "dense", "name": "pre", "units": f, "activation": "tanh"})
    return {"name": name, "input": {"features": f, "steps": t}, "layers": layers, "loss": loss}


# id -> (architecture, lengths, backend)
CASES = {
    "one-head-causal-mse": (_arch("att_h1", 1, True, "mse"), None, "numpy"),
    "two-heads-mse": (_arch("att_h2", 2, False, "mse"), None, "numpy"),
    "two-heads-mse-l2": (dict(_arch("att_h2r", 2, False, "mse"),
                              regularization={"l2": 0.3}), None, "numpy"),
    "two-heads-causal-sce-after-dense": (
        _arch("att_h2c", 2, True, "softmax_cross_entropy", t=4, pre=True), None, "numpy"),
    "two-heads-causal-mse-last": (
        _arch("att_h2l", 2, True, {"type": "mse", "steps": "last"}), None, "numpy"),
    "two-heads-causal-mse-lengths": (_arch("att_h2m", 2, True, "mse", t=4), [4, 2], "numpy"),
    "three-heads-sce-c": (_arch("att_h3", 3, False, "softmax_cross_entropy", f=6), None, "c"),
}


# ---- an independent forward pass and the loss's derivatives at the output ----------

def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _forward(p, x, lay, lengths):
    """The attention layer's input X and, per sample, Q, K, V, P (per head),
    AV and the output A (plain NumPy; padded keys at -inf)."""
    if "pre.W" in p:
        x = np.tanh(x @ p["pre.W"] + p["pre.b"])
    n, t, f = x.shape
    d = f // lay.heads
    q, k, v = (x @ p[f"att.W{c}"] + p[f"att.b{c}"] for c in "qkv")
    keep = np.ones((n, t, t), dtype=bool)
    if lay.causal:
        keep &= np.tril(np.ones((t, t), dtype=bool))
    if lengths is not None:
        keep &= (np.arange(t)[None, :] < np.asarray(lengths)[:, None])[:, None, :]
    probs = np.zeros((n, lay.heads, t, t))
    av = np.zeros_like(x)
    for j in range(lay.heads):
        cols = slice(j * d, (j + 1) * d)
        s = q[:, :, cols] @ k[:, :, cols].transpose(0, 2, 1) / math.sqrt(d)
        probs[:, j] = _softmax(np.where(keep, s, -np.inf))
        av[:, :, cols] = probs[:, j] @ v[:, :, cols]
    return x, q, k, v, probs, av, av @ p["att.Wo"] + p["att.bo"]


def _output_derivatives(spec, out, y, lengths):
    """δA[n] and Λ[n] = ∂²L/∂A[n]² for every sample, from the loss alone
    (the mean over the scored (sample, step) rows: the real ones)."""
    loss = LOSSES[spec.loss.type]
    n, t, f = out.shape
    lengths = [t] * n if lengths is None else lengths
    scored = [(i, s) for i in range(n) for s in range(t)
              if (s == t - 1 if spec.loss.steps == "last" else s < lengths[i])]
    grad, lam = np.zeros_like(out), np.zeros((n, t * f, t * f))
    for i, s in scored:
        target = y[i, s] if spec.loss.steps != "last" else y[i]
        grad[i, s] = loss.reference_grad(out[i, s][None], np.asarray(target)[None])[0]
        if loss.curvature_form == "softmax":
            pr = _softmax(out[i, s])
            block = np.diag(pr) - np.outer(pr, pr)
        else:                                       # mse: ℓ'' = 1 per unit
            block = np.eye(f)
        lam[i, s * f:(s + 1) * f, s * f:(s + 1) * f] = block / len(scored)
    return grad / len(scored), lam


def _indices(mod, f, d):
    """Flat indices of W̃q[j], W̃k[j], W̃v[j] (rows of W then b, head j's
    columns), W̃o and Wo[j,:], row-major."""
    idx = mod.unflatten(np.arange(mod.N_PARAMS, dtype=np.float64))
    idx = {k: v.astype(int) for k, v in idx.items()}

    def tilde(c, cols):
        return np.vstack([idx[f"att.W{c}"][:, cols], idx[f"att.b{c}"][None, cols]]).ravel()

    heads = f // d
    out = {(c, j): tilde(c, slice(j * d, (j + 1) * d)) for c in "qkv" for j in range(heads)}
    out[("o", None)] = tilde("o", slice(0, f))
    for j in range(heads):
        out[("o", j)] = idx["att.Wo"][j * d:(j + 1) * d].ravel()
    return out, idx


def _blocks_for(spec):
    d = derive(spec)
    parts = next(p for p in d.graph.layer_parts.values() if isinstance(p, AttentionParts))
    return AttentionBlocks(short_names(parts, d.graph.vars))


def _point(spec, mod, lengths):
    params, x, y = sample_point(spec, mod, batch=2, seed=3)
    rng = np.random.default_rng(7)
    params = {k: v + rng.normal(0, 0.4, v.shape) for k, v in params.items()}
    lay = spec.layers[-1]
    xin, q, k, v, probs, av, out = _forward(params, x, lay, lengths)
    grad, lam = _output_derivatives(spec, out, y, lengths)
    (t, f), d = lay.in_shape, lay.in_shape[1] // lay.heads

    def env(n, j):
        cols = slice(j * d, (j + 1) * d)
        return {"X": xin[n], "AV": av[n], "dA": grad[n], "Wo": params["att.Wo"],
                "Lam": lam[n], "Q": q[n, :, cols], "K": k[n, :, cols], "V": v[n, :, cols],
                "P": probs[n, j], "T": t, "F": f, "d": d, "j": j}
    return params, x, y, env


@pytest.mark.parametrize("cid", list(CASES))
def test_printed_blocks_give_the_modules_hessian(builder, cid):
    arch, lengths, backend = CASES[cid]
    spec = load_spec(arch)
    mod = builder(arch, backend)
    lay = spec.layers[-1]
    heads, f = lay.heads, lay.in_shape[1]
    params, x, y, env = _point(spec, mod, lengths)
    blocks = _blocks_for(spec)
    idx, by_key = _indices(mod, f, f // heads)
    h = np.zeros((mod.N_PARAMS, mod.N_PARAMS))
    gauss_newton = {c: 0.0 for c in blocks.gauss_newton}
    for n in range(x.shape[0]):
        envs = [blocks.evaluate(env(n, j)) for j in range(heads)]
        gauss_newton["v"] += blocks.gauss_newton["v"].value(envs[-1])     # the last head's
        gauss_newton["o"] += blocks.gauss_newton["o"].value(envs[0])
        jac = {(c, j): envs[j][f"J{c}"] for c in "qkv" for j in range(heads)}
        jac[("o", None)] = envs[0]["Jo"]
        for a, ja in jac.items():                           # the outer-product terms
            for b, jb in jac.items():
                h[np.ix_(idx[a], idx[b])] += ja.T @ envs[0]["Lam"] @ jb
        for j in range(heads):                              # the functional terms
            for (a, b), expr in blocks.deltas.items():
                delta = expr.value(envs[j])
                ra, rb = idx[(a, j)], idx[(b, j)]
                h[np.ix_(ra, rb)] += delta
                if a != b:
                    h[np.ix_(rb, ra)] += delta.T
                else:
                    assert rel_err(delta, delta.T) <= 1e-12
    # λ I from l2 on the weights' rows (not the biases')
    weights = np.concatenate([by_key[f"att.W{c}"].ravel() for c in "qkvo"])
    h[weights, weights] += spec.l2
    exact = mod.hessian(params, x, y, lengths=lengths)
    for c, head in (("v", heads - 1), ("o", None)):     # the two printed Kronecker blocks
        rows = idx[(c, head)]
        expected = exact[np.ix_(rows, rows)] - spec.l2 * np.diag(np.isin(rows, weights))
        assert rel_err(gauss_newton[c], expected) <= 1e-10
    keys, block = mod.hessian_blocks(params, x, y, lengths=lengths)["att"]
    rows = np.concatenate([by_key[k].ravel() for k in keys])
    assert rel_err(h[np.ix_(rows, rows)], block) <= 1e-10
    assert rel_err(h[np.ix_(rows, rows)], exact[np.ix_(rows, rows)]) <= 1e-10


def test_functional_terms_are_not_zero(builder):
    """The Δ blocks are printed because they are there: each is nonzero at a
    random point (and test_printed_blocks_give_the_modules_hessian fails
    without them)."""
    arch, lengths, backend = CASES["two-heads-mse"]
    spec = load_spec(arch)
    _, _, _, env = _point(spec, builder(arch, backend), lengths)
    blocks = _blocks_for(spec)
    values = blocks.evaluate(env(0, 1))
    for pair, expr in blocks.deltas.items():
        assert np.abs(expr.value(values)).max() > 1e-6, pair


def _layer_softmax_row(spec):
    """The layer's own composition from its scores S to its weights P (the
    ops its forward added: mask, row max, exp, row sum, quotient), run by
    SymPy on one symbolic row s of unmasked scores: the row p(s)."""
    graph = derive(spec).graph
    parts = next(p for p in graph.layer_parts.values() if isinstance(p, AttentionParts))
    t = parts.steps
    s = sp.symbols(f"s0:{t}")
    row = {parts.scores: list(s)}
    first, last = graph.producer[parts.scores], graph.producer[parts.weights]
    for op in graph.ops[first + 1:last + 1]:
        kind = op.primitive.name
        if kind == "causal_mask":               # a row's unmasked keys pass unchanged
            row[op.out] = row[op.args[0]]
        elif kind == "rowmax":                  # p does not depend on the shift
            row[op.out] = sp.Symbol("m")
        elif kind == "sum":
            row[op.out] = sum(row[op.args[0]])
        elif kind == "map":
            expr = op.attrs["expr"]
            by_name = {x.name: x for x in expr.free_symbols}

            def at(i):
                return {by_name[a]: row[a][i] if isinstance(row[a], list) else row[a]
                        for a in op.args if a in by_name}
            row[op.out] = [expr.subs(at(i)) for i in range(t)]
        else:
            raise AssertionError(f"unexpected {kind} between the scores and the weights")
    return s, sp.Matrix([row[parts.weights]])


@pytest.mark.parametrize("cid", list(CASES))
def test_softmax_rules_are_the_derivatives_of_the_layers_composition(cid):
    """J(p) and dJ(p)[u] as printed equal SymPy's first and second
    derivatives of the composition the layer derives its Hessian from."""
    s, p = _layer_softmax_row(load_spec(CASES[cid][0]))
    t = len(s)
    rng = np.random.default_rng(t)
    at = {**dict(zip(s, rng.normal(size=t))), sp.Symbol("m"): 0.7}
    u = rng.normal(size=t)
    p_num = np.array(p.subs(at).evalf(30), dtype=float)
    env = {"p": p_num, "u": u[None, :]}
    jac = p.jacobian(s)                                  # (∂p/∂s)_ik
    assert rel_err(softmax_jacobian().value(env),
                   np.array(jac.subs(at).evalf(30), dtype=float)) <= 1e-12
    dj = sum((jac.diff(si) * ui for si, ui in zip(s, u)), sp.zeros(t, t))   # d/dε J(s + εu)
    dj_num = np.array(dj.subs(at).evalf(30), dtype=float)
    assert rel_err(softmax_jacobian_derivative().value(env), dj_num) <= 1e-12
    # and it is the second derivatives contracted with a gradient g = u
    contracted = sum((sp.hessian(p[i], s) * u[i] for i in range(t)), sp.zeros(t, t))
    assert rel_err(dj_num, np.array(contracted.subs(at).evalf(30), dtype=float)) <= 1e-12


def test_a_masked_key_has_a_zero_row_and_column():
    env = {"p": np.array([[0.3, 0.7, 0.0]]), "u": np.array([[1.0, -2.0, 5.0]])}
    for expr in (softmax_jacobian(), softmax_jacobian_derivative()):
        m = expr.value(env)
        assert not m[2].any() and not m[:, 2].any()


def test_commutation_matrix_transposes():
    m = np.arange(6.0).reshape(2, 3)
    assert (commutation(2, 3) @ m.ravel() == m.T.ravel()).all()


# ---- printing ------------------------------------------------------------------------

ATTENTION_LINES = (
    "J(p) = ∂p/∂s = diag(p) - pᵀ·p",
    "dJ(p)[u] = diag(p ⊙ ū) - (p ⊙ ū)ᵀ·p - pᵀ·(p ⊙ ū),  ū = u - (u·pᵀ) 1ᵀ",
    "𝒥[n,j] = ⊕_t J(p_t)",
    "Ψ[n,j] = ⊕_t dJ(p_t)[δp_t]",
    "∂A[n]/∂W̃v[j] = (P[n,j]·X̃[n]) ⊗ Wo[j,:]ᵀ",
    "∂A[n]/∂W̃o = Õ[n] ⊗ I_F",
    "H[W̃v[j]; W̃v[j]] = Σ_n ((P[n,j]·X̃[n])ᵀ ⊗ Wo[j,:])·Λ[n]·((P[n,j]·X̃[n]) ⊗ Wo[j,:]ᵀ)",
    "H[W̃o; W̃o] = Σ_n (Õ[n]ᵀ ⊗ I_F)·Λ[n]·(Õ[n] ⊗ I_F)",
    "H[θ; θ'] = Σ_n (∂A[n]/∂θ)ᵀ·Λ[n]·∂A[n]/∂θ' + Σ_n Δ[θ; θ'][n] + λ I",
    "∂A[n]/∂W̃q[j] = (I_T ⊗ (Wo[j,:]ᵀ·V[n,j]ᵀ))·𝒥[n,j]·∂S[n,j]/∂W̃q[j]",
    "Δ[W̃q[j]; W̃k[j]][n] = (∂S[n,j]/∂W̃q[j])ᵀ·Ψ[n,j]·∂S[n,j]/∂W̃k[j] + "
    "((X̃[n]ᵀ·δS[n,j]·X̃[n]) ⊗ I_d)/√d",
    "Δ[W̃v[j]; Wo[j,:]][n] = (((P[n,j]·X̃[n])ᵀ·δA[n]) ⊗ I_d)·C_(d,F)",
)


def test_show_hessian_prints_the_attention_blocks(capsys):
    assert main(["show", TRANSFORMER, "--hessian"]) == 0
    text = capsys.readouterr().out
    for line in ATTENTION_LINES:
        assert line in text, line
    # the layer inside its block is named, with its keys and its input
    assert "The attention layer attn_mha (2 heads, d = 8" in text
    assert "X[n] = A_attn_norm[n]" in text and "attn.mha.Wq, attn.mha.bq" in text
    assert "(128 × 136)" in text and "(64 × 64)" in text
    # every printed block is one the numerical test evaluates
    blocks = _blocks_for(load_spec(TRANSFORMER))
    for a, b in blocks.deltas:
        assert blocks.block_name(a, b).text() + " = " in text


def test_show_hessian_latex_and_doc_hold_the_attention_blocks(tmp_path):
    tex = render_hessian(TRANSFORMER, latex=True)
    for piece in (r"\bigoplus_t", r"\mathcal{J}", r"\Psi", r"\tilde{X}", r"C_{d,F}",
                  r"\operatorname{diag}(p \odot \bar{u})"):
        assert piece in tex, piece
    eqs, _ = latex_equations(tex)
    for eq in eqs:
        check_equation(eq)
    blocks = document(TRANSFORMER)
    md = markdown(blocks)
    hessian = md.split("## 6.", 1)[1]
    assert r"\mathcal{J}" in hessian and r"\Delta [\tilde{\mathit{Wq}}[j];" in hessian
    for eq in markdown_equations(hessian):
        check_equation(eq)
    assert main(["doc", TRANSFORMER, "-o", str(tmp_path / "doc.html")]) == 0
    html = (tmp_path / "doc.html").read_text(encoding="utf-8")
    assert html == to_html(blocks, blocks[0][2])
    assert html.count("<math") > 100 and "\\bigoplus" not in html and "$$" not in html
    assert "<msub><mi>&#x02A01;</mi><mi>t</mi></msub>" in html     # ⊕_t rendered
    assert "<mi>&#x003A8;</mi>" in html and "<mover><mrow><mi>X</mi>" in html   # Ψ, X̃


def test_every_attention_layer_is_printed_with_its_own_names():
    """One at the top and one inside a block, after an embedding: each gets
    its sentence, its input and its keys; the dense layers keep theirs."""
    arch = {"name": "two_att", "input": {"tokens": 7, "steps": 3},
            "layers": [{"type": "embedding", "name": "emb", "units": 4, "positions": True},
                       {"type": "attention", "name": "first", "heads": 1},
                       {"type": "block", "name": "b", "residual": True, "layers": [
                           {"type": "layernorm", "name": "ln"},
                           {"type": "attention", "name": "second", "heads": 2,
                            "causal": True}]},
                       {"type": "dense", "units": 7}],
            "loss": "softmax_cross_entropy"}
    text = render_hessian(arch)
    assert text.count("The attention layer ") == 2
    assert "The attention layer first (1 head, d = 4" in text
    assert "The attention layer b_second (2 heads, d = 2" in text
    assert "X[n] = A_emb[n]" in text and "X[n] = A_b_ln[n]" in text
    assert "first.Wq, first.bq" in text and "b.second.Wo, b.second.bo" in text
    assert "(12 × 20)" in text            # ∂A[n]/∂W̃o of the first: T·F × (F+1)·F


def test_printed_shapes_are_the_evaluated_ones():
    """Each shape show --hessian prints next to an attention equation is the
    shape of that equation's value (the example transformer's sizes)."""
    spec = load_spec(TRANSFORMER)
    text = render_hessian(TRANSFORMER).splitlines()
    lay = spec.layers[1].layers[1]                # attn.mha
    (t, f), heads = lay.in_shape, lay.heads
    d = f // heads
    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(size=(t, t)))
    env = {"X": rng.normal(size=(t, f)), "AV": rng.normal(size=(t, f)),
           "dA": rng.normal(size=(t, f)), "Wo": rng.normal(size=(f, f)),
           "Lam": rng.normal(size=(t * f, t * f)), "Q": rng.normal(size=(t, d)),
           "K": rng.normal(size=(t, d)), "V": rng.normal(size=(t, d)), "P": probs,
           "T": t, "F": f, "d": d, "j": 1}
    blocks = _blocks_for(spec)
    values = blocks.evaluate(env)
    named = [(eq.sides[0].text(), values[key]) for key, eq, _ in blocks.defs if key != "dS"]
    named += [(blocks.score_names[c].text(), values[f"S{c}"]) for c in "qk"]
    named += [(blocks.jacobian_names[c].text(), values[f"J{c}"]) for c in "qkvo"]
    named += [(blocks.block_name(a, b).text(), e.value(values))
              for (a, b), e in blocks.deltas.items()]
    named += [(name, blocks.gauss_newton[c].value(values))
              for c, name in (("v", "H[W̃v[j]; W̃v[j]]"), ("o", "H[W̃o; W̃o]"))]
    for name, value in named:
        line = next(x for x in text if x.strip().startswith(name + " = "))
        assert line.endswith(f"({value.shape[0]} × {value.shape[1]})"), (line, value.shape)
