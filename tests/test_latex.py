"""Every output that claims to be LaTeX is LaTeX: each equation of ``bpgen
show --latex``, ``bpgen show --hessian --latex`` and ``bpgen doc`` parses
with a real TeX-math parser (latex2mathml, behind bpgen.doc.tex_to_mathml,
which also refuses what latex2mathml lets through: unbalanced braces,
unknown commands, raw Unicode), every subscript wraps the whole name, and
no Unicode operator is left.  The notation is one: a column block is
``V[k]``, a summand ``δV^(k)``, the curvature ``Λ`` (``A`` is the
activation only)."""
import functools
import os
import re

import pytest

from bpgen.cli import main
from bpgen.doc import TexError, document, markdown, tex_to_mathml
from bpgen.derivation import program
from bpgen.equations import labels, tex_label
from bpgen.hessian_text import render_hessian
from bpgen.show import render
from bpgen.spec import load_spec

from conftest import ROOT

ARCHS = {
    "dense": os.path.join(ROOT, "examples", "digits_mlp.yaml"),
    "lstm": os.path.join(ROOT, "examples", "sine_lstm.yaml"),
    "cnn": os.path.join(ROOT, "examples", "digits_cnn.yaml"),
    "transformer": os.path.join(ROOT, "examples", "tiny_transformer.yaml"),
    "gru-truncated": {"name": "gru_t", "input": {"features": 2, "steps": 5},
                      "layers": [{"type": "gru", "units": 3}, {"type": "layernorm"},
                                 {"type": "dense", "units": 2}],
                      "loss": {"type": "mse", "steps": "last"}, "bptt": {"truncate": 2}},
    "birnn": {"name": "bi_net", "input": {"features": 2, "steps": 4},
              "layers": [{"type": "birnn", "units": 3, "cell": "lstm", "name": "enc_1"},
                         {"type": "dense", "units": 2, "activation": "relu"}],
              "loss": "softmax_cross_entropy"},
    "layernorm": {"name": "ln", "input": {"features": 4},
                  "layers": [{"type": "dense", "units": 5, "activation": "gelu"},
                             {"type": "layernorm"},
                             {"type": "dense", "units": 3, "activation": "elu"}],
                  "loss": "sigmoid_binary_cross_entropy", "regularization": {"l2": 0.01}},
}


@functools.lru_cache(maxsize=None)
def doc_markdown(name: str) -> str:
    """The Markdown document of ARCHS[name] (made once per test session)."""
    return markdown(document(ARCHS[name]))


def latex_equations(text: str) -> list:
    """The math of a LaTeX fragment: every align* row (its alignment marks
    removed) and every inline $...$; plus the text outside math."""
    eqs = []
    rest = text
    for env in re.findall(r"\\begin\{align\*\}\n(.*?)\n\\end\{align\*\}", text, re.S):
        for row in env.split(" \\\\\n"):
            row = row.replace(" &= ", " = ").replace(" && ", r" \qquad ")
            eqs.append(row[2:] if row.startswith("& ") else row)
    rest = re.sub(r"\\begin\{align\*\}.*?\\end\{align\*\}", "", text, flags=re.S)
    rest = "\n".join(line for line in rest.splitlines() if not line.startswith("%"))
    eqs += re.findall(r"(?<!\\)\$([^$]+)\$", rest)
    prose = re.sub(r"(?<!\\)\$[^$]+\$", "", rest)
    return eqs, prose


def markdown_equations(text: str) -> list:
    eqs = re.findall(r"^\$\$\n(.*?)\n\$\$$", text, re.S | re.M)
    rest = re.sub(r"^\$\$\n.*?\n\$\$$", "", text, flags=re.S | re.M)
    rest = re.sub(r"`[^`]*`", "", rest)
    return eqs + re.findall(r"(?<!\\)\$([^$]+)\$", rest)


def check_equation(tex: str) -> None:
    tex_to_mathml(tex)                    # parses, balanced, known commands, ASCII
    # a subscript or superscript wraps its whole argument in braces, or is
    # one character (z_k): never W_l0 (W sub l, then 0) nor _\mathrm{l0}
    bad = re.search(r"(?<!\\)[_^][^{\s][A-Za-z0-9]", tex)
    assert bad is None, f"unwrapped sub/superscript at {bad.group(0)!r} in: {tex}"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_show_latex_equations_parse(arch):
    eqs, prose = latex_equations(render(ARCHS[arch], latex=True))
    assert len(eqs) > 10
    for tex in eqs:
        check_equation(tex)
    assert prose.isascii()
    assert not re.search(r"(?<!\\)[_^&#~]", prose), prose


@pytest.mark.parametrize("arch", list(ARCHS))
def test_show_hessian_latex_equations_parse(arch):
    text = render_hessian(ARCHS[arch], latex=True)
    eqs, prose = latex_equations(text)
    assert len(eqs) > 5 and r"\Lambda" in text and r"\nabla^{2} L" in text
    for tex in eqs:
        check_equation(tex)
    assert prose.isascii()
    assert not re.search(r"(?<!\\)[_^&#~]", prose), prose


@pytest.mark.parametrize("arch", list(ARCHS))
def test_doc_equations_parse(arch):
    eqs = markdown_equations(doc_markdown(arch))
    assert len(eqs) > 20
    for tex in eqs:
        check_equation(tex)


@pytest.mark.parametrize("broken", [
    r"W_{\mathrm{l0}",                  # an unclosed brace
    r"\delta Z_{\mathrm{l0}}} = X",     # a brace closed twice
    r"\frac{A}{B",                      # an unclosed argument
    r"\left(A \cdot B",                 # \left without \right
    r"\begin{cases} 1 & x \geq 0",      # \begin without \end
    r"A \hadamard B",                   # an unknown command
    r"δZ = A ⊙ B",                      # raw Unicode operators
    r"x^",                              # a superscript without argument
])
def test_broken_equation_is_rejected(broken):
    with pytest.raises(TexError):
        tex_to_mathml(broken)


def test_a_good_equation_passes():
    out = tex_to_mathml(r"\delta \mathit{XG}_{\mathrm{l0}}^{(1)} = \left[0,\ "
                        r"\delta \mathit{XG}_{\mathrm{l0}}[2]\right]", display=True)
    assert out.startswith("<math") and 'display="block"' in out and "http" not in out


@pytest.mark.parametrize("label, tex", [
    ("W_l0", r"W_{\mathrm{l0}}"),
    ("XW_l0", r"\mathit{XW}_{\mathrm{l0}}"),
    ("δZ_hidden_1", r"\delta Z_{\mathrm{hidden\_1}}"),
    ("δXG_l0^(2)", r"\delta \mathit{XG}_{\mathrm{l0}}^{(2)}"),
    ("G_l0[1]", r"G_{\mathrm{l0}}[1]"),
    ("H_l0(t-1)", r"H_{\mathrm{l0}}(t-1)"),
    ("δH_l0(from t+1)", r"\delta H_{\mathrm{l0}}(\text{from } t+1)"),
    ("R{δW_l1^(2)}^(1)", r"\mathcal{R}\{\delta W_{\mathrm{l1}}^{(2)}\}^{(1)}"),
    ("V_Wx_l0_fwd", r"V_{\mathit{Wx}_{\mathrm{l0\_fwd}}}"),
    ("Xc_l1^∘2^(1)", r"{\mathit{Xc}_{\mathrm{l1}}^{\circ 2}}^{(1)}"),
    ("‖W_l0‖²", r"\|W_{\mathrm{l0}}\|^{2}"),
    ("Σℓ", r"\Sigma\ell"),
    ("cut(δH_l0(t-1))", r"\operatorname{cut}(\delta H_{\mathrm{l0}}(t-1))"),
])
def test_labels_in_latex(label, tex):
    assert tex_label(label) == tex
    tex_to_mathml(tex)


def test_summands_and_column_blocks_are_told_apart():
    text = render(ARCHS["gru-truncated"])
    # a gate's column block is XG_l0[k]; a summand of an accumulated gradient δXG_l0^(k)
    assert "δXG_l0^(1) = [0, δXG_l0[2]] (columns 6:9 of 9)" in text
    assert "δXG_l0 = δXG_l0^(1) + δXG_l0^(2) + δXG_l0^(3)" in text
    assert "Nc_l0 = tanh(XG_l0[2] + HG_l0[2] ⊙ Rg_l0)" in text
    for line in text.splitlines():
        lhs = line.strip().split(" = ")[0]
        if lhs.startswith("δ") and re.search(r"\[\d+\]$", lhs):
            # a block's gradient is computed, never summed from parts
            assert "[0," not in line and " + " not in line.split(" = ", 1)[1], line
    # one symbol per quantity: the unsummed terms of a reduced gradient are marked
    assert "δg_l1 = 1ᵀ·δg_l1(unsummed)" in text
    # time steps
    # (steps: last reads each sample's last real step: the output held through padding)
    assert "O_last = O_held(t=4)" in text and "O_held = " in text and "H_l0(t-1) = H_l0 of the previous" in text
    assert "cut(δH_l0(t-1)) = δH_l0(t-1), or 0 where the forward step is a multiple of 2" in text


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_label_names_one_variable(arch):
    spec = load_spec(ARCHS[arch])
    for entry in ("loss_and_grad", "hvp", "ggn_vp"):
        prog = program(spec, entry)
        names = labels(prog)
        seen = {}
        for var in prog.vars:
            assert seen.setdefault(names[var], var) == var, (entry, names[var])


def test_curvature_is_lambda_not_the_activation():
    text = render_hessian(ARCHS["dense"])
    assert "Λ_l0" in text and "Λ_out" in text
    # A is the activation only ("a_k of A_k"), never a curvature block
    assert not re.search(r"\bA_(l\d|L|k)(,\w+)? =|[⊗Σ] ?(Σ_n )?A_", text), text
    show = render(ARCHS["dense"])
    assert "A_l0 = tanh(XW_l0 + b_l0)" in show


def test_show_text_stays_informative():
    text = render(ARCHS["dense"])
    for part in ("digits_mlp: features input (64,)", "l0: dense tanh (64,) -> (32,)",
                 "Notation (docs/notation.md)", "Forward pass and loss:", "Grad of  ",
                 "δZ_l0 = δA_l0 ⊙ (1 - A_l0^∘2)", "δW_l0^(2) = Xᵀ·δZ_l0", "(64, 32)",
                 "Gradients:", "∂L/∂l0.W = δW_l0", "L = 5e-05 ‖W_l0‖² + 5e-05 ‖W_l1‖² + Σℓ / N"):
        assert part in text, part
    lstm = render(ARCHS["lstm"])
    for part in ("Loop over time steps: l0 (lstm), t = 0 .. 19", "(20N, 64)",
                 "Loop over time steps: backward through l0 (lstm), t = 19 .. 0",
                 "δH_l0 = δH_l0(from t+1) + δH_l0^(1)",
                 "After the loop (whole sequences, all steps at once):",
                 "δWh_l0 = H_l0(t-1)ᵀ·δG_l0"):
        assert part in lstm, part


def test_cli_show_hessian_latex_is_latex(capsys):
    assert main(["show", ARCHS["dense"], "--hessian"]) == 0
    text = capsys.readouterr().out
    assert main(["show", ARCHS["dense"], "--hessian", "--latex"]) == 0
    tex = capsys.readouterr().out
    # a network of dense layers: the derived assembly program of hessian()
    assert "H[l0.W, l0.b; l0.W, l0.b] = Σ_n (ã_l0[n]ᵀ·ã_l0[n]) ⊗ Λ_l0[n]" in text
    assert r"\begin" not in text
    assert r"\begin{align*}" in tex and r"H[\texttt{l0.W, l0.b};\ \texttt{l0.W, l0.b}]" in tex
