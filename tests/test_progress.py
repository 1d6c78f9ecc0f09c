"""Progress: each build stage is announced to a progress callback (and on a
terminal by the command line, unless --quiet); library calls are silent
without one; spectrum reports its Lanczos products."""
import numpy as np
import pytest

import bpgen
from bpgen.check import sample_point
from bpgen.cli import Progress, make_parser
from bpgen.spec import load_spec

from conftest import mlp
from test_generated import sampled_arch
from test_second_order import CASES as SECOND_ORDER


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


# a tiny CNN (Hessian from columns, not the dense assembly) and a dense net:
# modules test_second_order.py and test_generated.py build in C anyway
PROGRESS_ARCHS = {
    "cnn": SECOND_ORDER["conv-max-sce"][0],
    "mlp": sampled_arch("mse", "float64"),
}


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("arch", sorted(PROGRESS_ARCHS))
def test_long_calls_report_progress(builder, arch, backend, monkeypatch):
    """hessian, hessian_diag, hessian_blocks and hmp tell a progress callable
    how far they are (in slices for calls over many directions) and end with
    the total; the results equal those of the silent call to rounding."""
    spec = load_spec(PROGRESS_ARCHS[arch])
    mod = builder(PROGRESS_ARCHS[arch], backend)
    params, x, y = sample_point(spec, mod, batch=3, seed=1)
    monkeypatch.setattr(mod, "_ROW_CHUNK", 4)        # several slices of a small model
    V = np.random.default_rng(2).standard_normal((mod.N_PARAMS, 9))
    calls = {"hessian": lambda **kw: mod.hessian(params, x, y, **kw),
             "hessian_diag": lambda **kw: mod.flatten(mod.hessian_diag(params, x, y, **kw)),
             "hessian_blocks": lambda **kw: np.concatenate(
                 [b.ravel() for _, b in mod.hessian_blocks(params, x, y, **kw).values()]),
             "hmp": lambda **kw: mod.hmp(params, x, y, V, **kw)}
    for name, call in calls.items():
        heard = []
        loud, silent = call(progress=heard.append), call()
        scale = max(np.abs(silent).max(), 1.0)
        assert np.abs(loud - silent).max() <= 1e-12 * scale, name
        assert heard and heard[-1].startswith(f"{name}"), (name, heard)
        assert " in " in heard[-1] and heard[-1].endswith(" s"), heard
        if arch == "cnn" and name != "hmp":
            total = mod.N_PARAMS
            assert f": {total}/{total} " in heard[-1], heard
    assert "9/9 columns" in heard[-1]
    with pytest.raises(ValueError, match="progress: expected a callable"):
        mod.hessian(params, x, y, progress="yes")
