"""The command line as a newcomer meets it: every plausible mistake is one
line on stderr starting ``bpgen: error:``, exit status 2, no traceback, and
nothing written; the library's own path mistakes are ``ValueError`` naming
the argument.  Data-driven: one row per mistake -> the message expected."""
import os

import numpy as np
import pytest

import bpgen
from bpgen.cli import main

ARCH = """\
name: cli_net
input: {features: 3}
layers:
  - {type: dense, units: 4, activation: tanh}
  - {type: dense, units: 2}
loss: softmax_cross_entropy
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory holding arch.yaml, a sub directory, data files."""
    root = tmp_path_factory.mktemp("cli")
    (root / "arch.yaml").write_text(ARCH)
    (root / "somedir").mkdir()
    (root / "fake.npz").write_text("not a zip archive\n")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), np.arange(5) % 2
    params = {"l0.W": rng.standard_normal((3, 4)), "l0.b": rng.standard_normal(4),
              "l1.W": rng.standard_normal((4, 2)), "l1.b": rng.standard_normal(2)}
    np.savez(root / "ok.npz", x=x, y=y, **params)
    np.savez(root / "xy.npz", x=x, y=y)
    np.savez(root / "underscore.npz", x=x, y=y,
             **{k.replace(".", "_"): v for k, v in params.items()})
    np.savez(root / "some.npz", x=x, y=y, **{"l0.W": params["l0.W"]})
    np.savez(root / "extra.npz", x=x, y=y, extra=x, **params)
    np.savez(root / "noy.npz", x=x)
    np.savez(root / "shape.npz", x=x, y=y, **{k: v.T for k, v in params.items()})
    return root


# (argv, text the one-line message must hold); paths are relative to `work`
MISTAKES = [
    # doc -o
    (["doc", "arch.yaml", "-o", "nodir/x.html"],
     "-o: nodir/x.html: the directory nodir does not exist"),
    (["doc", "arch.yaml", "-o", "somedir"], "-o: somedir is a directory"),
    (["doc", "arch.yaml", "-o", "x.txt"], "-o: x.txt: expected a name ending in .md"),
    (["doc", "arch.yaml", "-o", "x"], "-o: x: expected a name ending in .md"),
    (["doc", "missing.yaml"], "missing.yaml: file: cannot read it"),
    (["doc", "somedir"], "somedir: file: cannot read it"),
    # build --out
    (["build", "arch.yaml", "--out", "arch.yaml"], "--out: arch.yaml exists and is not a directory"),
    (["build", "arch.yaml", "--out", "fake.npz/sub"], "--out: cannot create the directory"),
    (["build", "arch.yaml", "--out", ""], "--out: expected a directory, got an empty name"),
    (["build", "arch.yaml", "--backend", "C"], "argument --backend: invalid choice: 'C'"),
    (["build"], "the following arguments are required: arch"),
    (["biuld", "arch.yaml"], "invalid choice: 'biuld'"),
    # check
    (["check", "arch.yaml", "--tol", "-1"], "argument --tol: expected a positive number, got -1"),
    (["check", "arch.yaml", "--tol", "0"], "argument --tol: expected a positive number, got 0"),
    (["check", "arch.yaml", "--tol", "nan"], "argument --tol: expected a positive number"),
    (["check", "arch.yaml", "--tol", "abc"], "argument --tol: expected a positive number"),
    (["check", "arch.yaml", "--batch", "0"], "argument --batch: expected a positive integer"),
    (["check", "arch.yaml", "--batch", "1000000000"], "batch: 1000000000 is too large"),
    (["check", "arch.yaml", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    (["check", "missing.yaml"], "missing.yaml: file: cannot read it"),
    # spectrum --data
    (["spectrum", "arch.yaml", "--data", "missing.npz"], "--data: cannot read missing.npz"),
    (["spectrum", "arch.yaml", "--data", "somedir"], "--data: somedir is a directory"),
    (["spectrum", "arch.yaml", "--data", "fake.npz"], "--data: fake.npz is not an .npz file"),
    (["spectrum", "arch.yaml", "--data", "arch.yaml"], "--data: arch.yaml is not an .npz file"),
    (["spectrum", "arch.yaml", "--data", "noy.npz"], "--data: noy.npz has no array 'y'"),
    (["spectrum", "arch.yaml", "--data", "underscore.npz"],
     "not x, y or a parameter of cli_net: 'l0_W' (did you mean 'l0.W'?)"),
    (["spectrum", "arch.yaml", "--data", "extra.npz"], "'extra'; the parameters are l0.W, l0.b"),
    (["spectrum", "arch.yaml", "--data", "extra.npz", "--partial"], "'extra'"),
    (["spectrum", "arch.yaml", "--data", "some.npz"],
     "some.npz holds some parameters but not l0.b, l1.W, l1.b; give them all, or pass --partial"),
    (["spectrum", "arch.yaml", "--data", "shape.npz", "--backend", "numpy"],
     "parameter 'l0.W' has shape (4, 3), expected (3, 4)"),
    (["spectrum", "arch.yaml", "--data", "ok.npz", "-k", "0"],
     "argument -k: expected a positive integer, got 0"),
    (["spectrum", "arch.yaml"], "the following arguments are required: --data"),
]


def run(argv) -> int:
    """main(argv)'s exit status, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistake_is_one_line_exit_2(work, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(work)
    before = sorted(os.listdir(work))
    status = run(argv)
    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("bpgen: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert sorted(os.listdir(work)) == before          # nothing written


def test_spectrum_png_refused_before_the_work(work, capsys, monkeypatch):
    """Without matplotlib --png is refused first; a missing directory too."""
    import importlib.util
    monkeypatch.chdir(work)
    if importlib.util.find_spec("matplotlib") is None:
        assert main(["spectrum", "arch.yaml", "--data", "ok.npz", "--png", "s.png"]) == 2
        assert capsys.readouterr() == ("", "bpgen: error: --png: needs matplotlib "
                                           "(pip install matplotlib)\n")
    else:
        assert main(["spectrum", "arch.yaml", "--data", "ok.npz", "--png", "nodir/s.png"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "--png: cannot write nodir/s.png" in err


def test_spectrum_partial_says_where_parameters_came_from(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    assert main(["spectrum", "arch.yaml", "--data", "some.npz", "--partial", "--backend",
                 "numpy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ("parameters l0.W from some.npz, l0.b, l1.W, l1.b from init_params(0) (--partial)"
            in out), out
    assert main(["spectrum", "arch.yaml", "--data", "xy.npz", "--backend", "numpy",
                 "--quiet"]) == 0
    assert "parameters init_params(0)" in capsys.readouterr().out
    assert main(["spectrum", "arch.yaml", "--data", "ok.npz", "--backend", "numpy",
                 "--quiet"]) == 0
    assert "parameters from ok.npz" in capsys.readouterr().out


def test_doc_writes_by_extension(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    for name, start in (("d.md", "# "), ("d.markdown", "# "), ("d.HTML", "<!DOCTYPE html>")):
        assert main(["doc", "arch.yaml", "-o", name]) == 0
        assert (work / name).read_text(encoding="utf-8").startswith(start)
        os.unlink(work / name)
    capsys.readouterr()


# library mistakes: (call, exception, message)
LIBRARY = [
    (lambda w: bpgen.build(str(w / "arch.yaml"), out_dir=w / "arch.yaml"), ValueError,
     "out_dir: .*arch.yaml exists and is not a directory"),
    (lambda w: bpgen.build(str(w / "arch.yaml"), out_dir=123), ValueError,
     "^out_dir: expected a directory .*, got int$"),
    (lambda w: bpgen.build(str(w / "arch.yaml"), out_dir=""), ValueError,
     "^out_dir: expected a directory, got an empty name$"),
    (lambda w: bpgen.build(ARCH), ValueError,
     r"^spec: expected a path \(to a YAML file\), a dict or a Spec, got YAML text "
     r"\(pass yaml.safe_load\(text\), or write it to a file\)$"),
    (lambda w: bpgen.build("name: x"), ValueError, "got YAML text"),
    (lambda w: bpgen.build(None), ValueError, "expected a path .*, got NoneType"),
    (lambda w: bpgen.spectrum(None, {}, None, None), ValueError,
     r"^module: expected a generated module \(what bpgen.build returns\), got NoneType$"),
    (lambda w: bpgen.spectrum("arch.yaml", {}, None, None), ValueError,
     "module: expected a generated module"),
]


@pytest.mark.parametrize("call,exc,message", LIBRARY)
def test_library_mistake_is_a_value_error(work, call, exc, message):
    with pytest.raises(exc, match=message) as info:
        call(work)
    assert "\n" not in str(info.value)


# ---- bpgen check: sampled above a size, exhaustive on request ---------------

def test_check_samples_above_the_threshold(work, capsys, monkeypatch):
    """Above SAMPLE_ABOVE parameters the finite differences are sampled (the
    number printed), with a progress line per parameter also when stderr is
    not a terminal; --exhaustive differences every one."""
    from bpgen import check
    monkeypatch.chdir(work)
    monkeypatch.setattr(check, "SAMPLE_ABOVE", 10)
    assert main(["check", "arch.yaml", "--backend", "numpy"]) == 0
    out, err = capsys.readouterr()
    assert ("sampled finite differences: per parameter array 8 random coordinates and 2 "
            "random unit directions, 30 differences per backend (above 10 parameters; "
            "--exhaustive differences all 26)") in out
    assert "OK: every error is within tolerance" in out
    for line in ("numpy: l0.W (3x4): 10 finite differences (8 coordinates, 2 directions)",
                 "numpy: l0.b (4): 6 finite differences (4 coordinates, 2 directions)"):
        assert line in err, err
    assert main(["check", "arch.yaml", "--backend", "numpy", "--exhaustive", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "finite differences of every parameter (exhaustive)" in out and err == ""


def test_sampled_differences_find_a_wrong_entry():
    """One wrong gradient entry among 400: a random direction sees it."""
    from bpgen.check import sampled_fd_errors
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 2, (20, 20))
    p = {"w": rng.standard_normal((20, 20))}

    def f(q):
        return float(np.sum(a * q["w"] ** 2))
    grads = {"w": 2 * a * p["w"]}
    err, count = sampled_fd_errors(f, p, grads, "w", 8, 2, np.random.default_rng(1))
    assert err < 1e-8 and count == 10
    grads["w"][7, 3] += 0.5
    err, _ = sampled_fd_errors(f, p, grads, "w", 0, 2, np.random.default_rng(1))
    assert err > 1e-4


ATTENTION_ARCH = """\
name: cli_attention
input: {tokens: 6, steps: 4}
layers:
  - {type: embedding, units: 6, positions: true}
  - {type: attention, heads: 2, causal: true}
  - {type: dense, units: 3}
loss: {type: mse, steps: all}
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_passes_a_gradient_that_is_exactly_zero(tmp_path, capsys, dtype):
    """Attention's key bias b_k has a zero gradient (softmax ignores a shift
    of a row's scores): its errors are taken relative to a thousandth of the
    whole gradient's scale, not to nothing, so the check passes (it failed
    on the finite differences' noise, ~1e-10, and float32's rounding)."""
    from bpgen.check import GRAD_SCALE_FLOOR, grad_floor, rel_err
    arch = tmp_path / "att.yaml"
    arch.write_text(ATTENTION_ARCH.replace("name: cli_attention",
                                           f"name: cli_attention\ndtype: {dtype}"))
    assert main(["check", str(arch), "--backend", "numpy", "--quiet"]) == 0
    out, _ = capsys.readouterr()
    assert "OK: every error is within tolerance" in out
    row = next(line for line in out.splitlines() if line.startswith("l1.bk"))
    assert "!" not in row
    # the floor: a thousandth of the largest entry of any array, at least 1e-6
    assert grad_floor({"a": np.array([0.5, -2.0]), "b": np.zeros(3)}) == GRAD_SCALE_FLOOR * 2
    assert grad_floor({"a": np.zeros(2)}) == 1e-6
    assert rel_err(np.array([1e-10]), np.array([0.0]), 2e-3) == pytest.approx(5e-8)
    # a wrong entry in a small array is still caught on the whole gradient's scale
    assert rel_err(np.array([1e-3]), np.array([0.0]), 2e-3) == 0.5


# ---- the docs' examples use files that exist ---------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(
    os.path.join(ROOT, "docs"))) if f.endswith(".md")]


@pytest.mark.parametrize("doc", DOCS)
def test_docs_examples_name_existing_files(doc):
    """Every architecture a code example builds by path is in the repository
    (``arch.yaml`` stands for the reader's own file)."""
    import re
    with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
        text = fh.read()
    for path in re.findall(r"""(?:bpgen\.build\(|bpgen \w+ +)["']?([\w./-]+\.yaml)""", text):
        if os.path.basename(path) != "arch.yaml":
            assert os.path.exists(os.path.join(ROOT, path)), (doc, path)

