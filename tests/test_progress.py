"""Progress: each build stage is announced to a progress callback (and on a
terminal by the command line, unless --quiet); library calls are silent
without one; spectrum reports its Lanczos products."""
import numpy as np

import bpgen
from bpgen.check import sample_point
from bpgen.cli import Progress, make_parser
from bpgen.spec import load_spec

from conftest import mlp


def test_build_stages_reach_the_callback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BPGEN_CACHE_DIR", str(tmp_path / "cache"))
    heard = []
    bpgen.build(mlp(name="prog"), backend="c", out_dir=tmp_path / "g", progress=heard.append)
    stages = [m.split()[0] for m in heard]
    assert stages == ["deriving", "emitting", "compiling", "compiled"], heard
    assert heard[-1].endswith(" s")
    bpgen.build(mlp(name="prog2"), backend="numpy", out_dir=tmp_path / "g")
    assert capsys.readouterr() == ("", "")


def test_progress_lines_and_quiet(capsys):
    Progress(True)("deriving x ...")
    assert "deriving x ..." in capsys.readouterr().err
    Progress(False)("deriving x ...")
    assert capsys.readouterr().err == ""
    for cmd in ("build", "check", "spectrum"):
        extra = ["--data", "d.npz"] if cmd == "spectrum" else []
        assert make_parser().parse_args([cmd, "a.yaml", "--quiet"] + extra).quiet


def test_spectrum_reports_lanczos(builder):
    arch = mlp("tanh", "mse", hidden=(6,), out=2, features=3, name="prog_spec")
    spec, mod = load_spec(arch), builder(arch, "numpy")
    params, x, y = sample_point(spec, mod, batch=4, seed=0)
    heard = []
    res = bpgen.spectrum(mod, params, x, y, k=2, full=False, progress=heard.append)
    assert res["method"] == "lanczos" and res["products"] > 0
    assert heard[0].startswith("Lanczos on hvp") and heard[-1].startswith("Lanczos done")
    evals = np.linalg.eigvalsh(mod.hessian(params, x, y))
    assert np.allclose(res["largest"], evals[::-1][:2], atol=1e-8)
