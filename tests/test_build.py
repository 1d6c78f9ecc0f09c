"""The pipeline around the generated code: files, determinism, golden output,
the compile cache, the command line."""
import os
import subprocess
import sys

import pytest

import bpgen
from bpgen import cbuild
from bpgen.backends.c import build as c_build
from bpgen.codegen import generate
from bpgen.spec import load_spec

from conftest import ROOT, mlp, users_build_config
from test_generated import sampled_arch

EXAMPLES = sorted(os.path.join(ROOT, "examples", f)
                  for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".yaml"))


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bpgen", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


# ---- generated code -------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=os.path.basename)
def test_committed_generated_code_is_current(example, update_golden, monkeypatch):
    """generated/ holds exactly what the current generator emits for every
    example, with the build configuration users get (`bpgen build`: the C
    extension's name carries its flags): these are the golden files
    (``pytest --update-golden`` rewrites them after a deliberate change)."""
    monkeypatch.setattr(c_build, "BUILD", users_build_config())
    # the BLAS every install has (the mkl extra's would rename the extension)
    monkeypatch.setenv("BPGEN_BLAS", "openblas")
    spec = load_spec(example)
    for backend in ("numpy", "c"):
        for fname, text in generate(spec, backend).files.items():
            path = os.path.join(ROOT, "generated", fname)
            if update_golden:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
            assert os.path.exists(path), f"generated/{fname} is missing: run bpgen build"
            with open(path, encoding="utf-8") as fh:
                assert fh.read() == text, f"generated/{fname} is stale: run bpgen build"


def test_generation_is_deterministic():
    arch = mlp("gelu", "softmax_cross_entropy", l2=0.5)
    for backend in ("numpy", "c"):
        a = generate(load_spec(arch), backend).files
        b = generate(load_spec(dict(arch)), backend).files
        assert a == b


def test_header_and_comments():
    text = generate(load_spec(mlp("tanh", "mse", name="hdr")), "numpy").files["hdr_numpy.py"]
    head = text[:400]
    assert "DO NOT EDIT" in head and bpgen.__version__ in head and "sha256:" in head
    assert "# Grad of: l0_A = tanh(l0_Z)" in text
    # tanh' from the stored output (written over d_l0_A, which is not used again)
    assert ("d_l0_Z = d_l0_A*(1 - l0_A**2)" in text
            or "d_l0_Z = numpy.multiply(d_l0_A, 1 - l0_A**2, out=d_l0_A)" in text)
    assert "# d_l1_W = l0_Aᵀ·d_l1_Z" in text or "l0_A.T @" in text
    c = generate(load_spec(mlp("tanh", "mse", name="hdr")), "c").files["hdr_c.c"]
    assert "DO NOT EDIT" in c[:400] and "/* Grad of: l0_A = tanh(l0_Z) */" in c
    assert "malloc" not in c


def test_numpy_module_imports_only_numpy():
    text = generate(load_spec(mlp()), "numpy").files["net_numpy.py"]
    imports = {line.split()[1].split(".")[0] for line in text.splitlines()
               if line.startswith(("import ", "from "))}
    # NumPy and the standard library alone (os: the memory limit's environment;
    # time: the progress of long calls; json, tempfile, zipfile: save_params
    # and load_params)
    assert imports <= {"collections", "functools", "json", "math", "os", "numpy", "tempfile",
                       "threading", "time", "zipfile"}


def test_build_writes_the_module_files(tmp_path):
    arch = sampled_arch("mse", "float64")      # test_generated.py builds it too: one compile
    name = arch["name"]
    mod = bpgen.build(arch, backend="c", out_dir=tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert f"{name}_c.py" in names and f"{name}_c.c" in names
    assert any(n.startswith(f"_bpgen_{name}_") for n in names)
    assert mod.N_PARAMS == 4 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3


def test_invalid_spec_writes_nothing(tmp_path):
    out = tmp_path / "out"
    bad = mlp()
    bad["layers"][1]["activation"] = "tanhh"
    for backend in ("numpy", "c"):
        with pytest.raises(ValueError, match=r"layers\[1\]\.activation"):
            bpgen.build(bad, backend=backend, out_dir=out)
    assert not out.exists()


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        bpgen.build(mlp(), backend="fortran")


def test_compile_cache_skips_recompilation(tmp_path, monkeypatch):
    monkeypatch.setenv("BPGEN_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    import cffi
    original = cffi.FFI.compile

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)
    monkeypatch.setattr(cffi.FFI, "compile", counting)
    arch = mlp("relu", "mse", name="cached")
    bpgen.build(arch, backend="c", out_dir=tmp_path / "a")
    bpgen.build(arch, backend="c", out_dir=tmp_path / "a")
    bpgen.build(arch, backend="c", out_dir=tmp_path / "b")
    assert len(calls) == 1


def test_wrapper_compiles_a_missing_extension(tmp_path, monkeypatch, capfd):
    """A generated C wrapper whose extension was deleted rebuilds it on import,
    saying so in one line on stderr when the compilation starts; an extension
    found in the cache is installed silently."""
    monkeypatch.setenv("BPGEN_CACHE_DIR", str(tmp_path / "cache"))
    from bpgen.api import import_module, write_sources
    gen = generate(load_spec(mlp(name="lazy")), "c")
    paths = write_sources(gen, tmp_path / "g")
    mod = import_module([p for p in paths if p.endswith("lazy_c.py")][0], "lazy_c")
    out, err = capfd.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("bpgen: the extension _bpgen_lazy_") and "compiling lazy_c.c" in err
    params = mod.init_params()
    assert mod.forward(params, [[0.0, 1.0, 2.0, 3.0]]).shape == (1, 3)
    assert cbuild._suffix() and any(n.startswith("_bpgen_lazy_") for n in os.listdir(tmp_path / "g"))
    paths = write_sources(gen, tmp_path / "g2")
    import_module([p for p in paths if p.endswith("lazy_c.py")][0], "lazy_c")
    assert capfd.readouterr() == ("", "")


# ---- command line -----------------------------------------------------------

def test_cli_build_writes_and_reports(tmp_path):
    example = os.path.join(ROOT, "examples", "digits_mlp.yaml")
    r = _run("build", example, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for f in ("digits_mlp_numpy.py", "digits_mlp_c.py", "digits_mlp_c.c"):
        assert (tmp_path / f).exists() and f in r.stdout


def test_cli_invalid_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: net\ninput: {features: 3}\nlayers:\n  - {type: dense, units: 0}\n"
                   "loss: mse\n")
    out = tmp_path / "out"
    for cmd in (["build", str(bad), "--out", str(out)], ["show", str(bad)], ["check", str(bad)]):
        r = _run(*cmd)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert "layers[0].units" in r.stderr and "bad.yaml" in r.stderr
    assert not out.exists()


def test_cli_missing_file_exit_2(tmp_path):
    r = _run("build", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", [[], ["build"], ["show"], ["check"]])
def test_cli_help(cmd):
    r = _run(*cmd, "--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower()


def test_cli_show_text_and_latex():
    example = os.path.join(ROOT, "examples", "digits_mlp.yaml")
    r = _run("show", example)
    assert r.returncode == 0
    assert "Grad of" in r.stdout and "= Xᵀ·δZ_l0" in r.stdout
    assert "δZ_l0 = δA_l0 ⊙ (1 - A_l0^∘2)" in r.stdout
    r = _run("show", example, "--latex")
    assert r.returncode == 0 and r"\begin{align*}" in r.stdout


def test_cli_check_passes_and_prints_table(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("name: small\ninput: {features: 3}\nlayers:\n"
                    "  - {type: dense, units: 4, activation: gelu}\n"
                    "  - {type: dense, units: 2}\nloss: sigmoid_binary_cross_entropy\n")
    r = _run("check", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    for row in ("forward", "loss", "l0.W", "l0.b", "l1.W", "l1.b"):
        assert row in r.stdout
    assert "OK" in r.stdout
