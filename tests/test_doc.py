"""``bpgen doc``: the sections in order, the backward pass in the blocks and
order of the generated code, truncation and costs stated, and an HTML page
that is self-contained (no URL, no script) with MathML."""
import os
import re
import subprocess
import sys

import pytest

from bpgen.cli import main
from bpgen.codegen import generate
from bpgen.derivation import derive_all, program
from bpgen.doc import SECTIONS, matmul_flops, write
from bpgen.spec import load_spec

from conftest import ROOT
from test_latex import ARCHS, doc_markdown


def _grouped(n):
    return f"{n:,}".replace(",", r"\,")


def _headings(text):
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def _generated_grad_of(arch):
    """The ``# Grad of:`` variables of the generated loss_and_grad, in order."""
    spec = load_spec(arch)
    text = generate(spec, "numpy").files[f"{spec.name}_numpy.py"]
    body = text.split("\ndef _loss_and_grad(", 1)[1].split("\ndef ", 1)[0]
    return re.findall(r"# Grad of: (\w+) = ", body)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_sections_in_order_and_grad_of_blocks_match_the_generated_code(arch):
    text = doc_markdown(arch)
    assert _headings(text) == list(SECTIONS)
    assert text.startswith("# Derivation of ")
    doc_order = re.findall(r"^\*\*Grad of\*\* \$.*\$ \(code: `(\w+)`\)$", text, re.M)
    assert doc_order and doc_order == _generated_grad_of(ARCHS[arch])
    # every statement of loss_and_grad is there once, after the forward pass
    spec = load_spec(ARCHS[arch])
    n_ops = len(program(spec, "loss_and_grad").ops)
    fwd_bwd = text.split("## 2. Forward pass", 1)[1].split("## 4.", 1)[0]
    blocks = re.findall(r"^\$\$\n.*?\n\$\$$", fwd_bwd, re.S | re.M)
    assert len(blocks) == n_ops + len(spec.param_shapes)


def test_doc_names_truncation_loops_and_low_rank_factors():
    text = doc_markdown("gru-truncated")
    loops = text.split("## 4.", 1)[1].split("## 5.", 1)[0]
    assert "| l0 (gru) | $t = 0, \\ldots, 4$ | 5 |" in loops
    assert "every 2 steps" in loops and r"\{2, 4\}" in loops and "0..1, 2..3, 4" in loops
    factors = text.split("## 5.", 1)[1].split("## 6.", 1)[0]
    assert r"$\min(5N, 3, 9)$" in factors            # dWh = H(t-1)ᵀ·δHG over all steps
    assert "`l0.Wh`" in factors and "`l2.W`" in factors and "`l1.g`" not in factors
    dense = doc_markdown("dense")
    assert "no recurrent layer" in dense
    assert r"\Lambda_{\mathrm{l0}}" in dense and r"\mathcal{R}\{" in dense


def test_cost_table_counts_matmul_flops_and_workspace():
    spec = load_spec(ARCHS["dense"])
    derived = derive_all(spec)
    lg = derived.programs["loss_and_grad"]
    # forward 2·N·64·32 + 2·N·32·10, backward δA, δW_l1 and δW_l0
    assert matmul_flops(lg) == {1: 2 * (64 * 32 + 32 * 10) + 2 * (32 * 10 * 2 + 64 * 32)}
    lstm = derive_all(load_spec(ARCHS["lstm"])).programs["forward"]
    # N·1·64 input projection (20 steps at once), 20 steps of N·16·64, the dense head
    assert matmul_flops(lstm) == {1: 2 * (20 * 64 + 20 * 16 * 64 + 20 * 16)}
    assert lstm.loops
    text = doc_markdown("dense")
    cost = text.split("## 7. Cost", 1)[1]
    a, b = lg.workspace_size
    assert "| `loss_and_grad` | x, y, params | $10\\,112\\,N$ | " in cost
    assert f"${_grouped(a)}\\,N + {_grouped(b)}$" in cost
    module = generate(spec, "numpy").files[f"{spec.name}_numpy.py"]
    for name in derived.programs:      # the module's functions, and internal programs
        internal = f"\ndef {name}(" not in module
        assert (f"| `{name}` (internal program: " if internal else f"| `{name}` |") in cost
    assert "| `curvature` (internal program: " in cost
    assert "| `hessian_columns` (internal program: " in cost


@pytest.mark.parametrize("arch", ["lstm", "cnn"])
def test_html_is_one_self_contained_page_with_mathml(arch, tmp_path):
    path = tmp_path / "doc.html"
    text = write(ARCHS[arch], str(path))
    assert path.read_text(encoding="utf-8") == text
    assert text.startswith("<!DOCTYPE html>") and text.count("<math") > 50
    assert not re.search(r"https?://", text), re.search(r".{40}https?://.{40}", text)
    for tag in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url("):
        assert tag not in text, tag
    assert "$$" not in text and "\\frac" not in text       # every equation converted
    assert "<mfrac>" in text and 'display="block"' in text


def test_cli_doc_markdown_and_html(tmp_path, capsys):
    arch = os.path.join(ROOT, "examples", "digits_mlp.yaml")
    assert main(["doc", arch]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Derivation of digits_mlp") and out == doc_markdown("dense")
    assert "Written by `bpgen doc digits_mlp.yaml`" in out
    html = tmp_path / "mlp.html"
    assert main(["doc", arch, "-o", str(html)]) == 0
    assert capsys.readouterr().out == f"wrote {html}\n" and "<math" in html.read_text()
    md = tmp_path / "mlp.md"
    assert main(["doc", arch, "--out", str(md)]) == 0
    assert md.read_text() == doc_markdown("dense")
    assert main(["doc", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    # the module runs as a command, too
    r = subprocess.run([sys.executable, "-m", "bpgen", "doc", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "FILE.md|FILE.html" in r.stdout


def test_generated_docstring_points_to_the_document():
    spec = load_spec(ARCHS["dense"])
    for backend, fname in (("numpy", "digits_mlp_numpy.py"), ("c", "digits_mlp_c.py")):
        head = generate(spec, backend).files[fname][:1500]
        assert "Derivation document: bpgen doc digits_mlp.yaml" in head


@pytest.mark.parametrize("tex,has,lacks", [
    # an accumulation is one operator "+=", not "+" then "=" (shown "+ =")
    (r"H \mathrel{+}= \lambda I", "<mo>&#x0002B;&#x0003D;</mo>", "<mo><mrow>"),
    # primes next to their letter, full size (class prime), not a superscript
    (r"f''_k(z_k)", '<msub><mrow><mi>f</mi><mo class="prime" lspace="0em" rspace="0em">'
                    '&#x02033;</mo></mrow><mi>k</mi></msub>', "<msubsup>"),
    (r"f'(z)", '<mrow><mi>f</mi><mo class="prime" lspace="0em" rspace="0em">&#x02032;</mo>'
               '</mrow>', "<msup>"),
    (r"f''(Z_{\mathrm{l0}})", "&#x02033;</mo></mrow>", "<msup>"),
])
def test_html_operators_read_as_written(tex, has, lacks):
    from bpgen.doc_html import tex_to_mathml
    out = tex_to_mathml(tex)
    assert has in out and lacks not in out, out


def test_html_document_has_no_spaced_accumulation_or_tiny_primes():
    from bpgen.doc import document
    from bpgen.doc_html import to_html
    blocks = document(ARCHS["dense"])
    text = to_html(blocks, blocks[0][2])
    assert "<mo>&#x0002B;&#x0003D;</mo>" in text and "<mo><mrow><mo>" not in text
    assert 'class="prime"' in text and not re.search(r"<mi>&#x0203[23];</mi></msu", text)
    assert "mo.prime {" in text
