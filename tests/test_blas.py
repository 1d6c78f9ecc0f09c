"""The BLAS the C modules call: OpenBLAS (scipy-openblas32, a dependency) or
Intel MKL (the ``mkl`` extra), chosen by BPGEN_BLAS=openblas|mkl|auto."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bpgen
from bpgen.backends.c import blas, build

from conftest import ROOT, mlp

needs_mkl = pytest.mark.skipif(blas.mkl_library() is None,
                               reason="Intel MKL not installed (pip install '.[mkl]')")


def _arch(dtype, name):
    # products of 64 x 20 x 32 and up: every one goes to the BLAS
    return mlp("tanh", "softmax_cross_entropy", dtype=dtype, hidden=(32, 24), out=5,
               features=20, name=name)


def _results(mod, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)).astype(mod.DTYPE)
    y = rng.integers(0, 5, n)
    p, v = mod.init_params(0), mod.init_params(1)
    loss, grad = mod.loss_and_grad(p, x, y)
    return loss, grad, mod.hvp(p, x, y, v)


def test_bogus_choice_is_a_value_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BPGEN_BLAS", "bogus")
    with pytest.raises(ValueError, match="BPGEN_BLAS"):
        build.config_for("float64")
    with pytest.raises(ValueError, match="BPGEN_BLAS"):
        bpgen.build(_arch("float64", "bogus"), backend="c", out_dir=tmp_path)


def test_forced_mkl_without_mkl_is_a_value_error(monkeypatch):
    monkeypatch.setenv("BPGEN_BLAS", "mkl")
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    with pytest.raises(ValueError, match="BPGEN_BLAS=mkl"):
        build.config_for("float32")


def test_auto_without_mkl_is_openblas(monkeypatch):
    monkeypatch.delenv("BPGEN_BLAS", raising=False)
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    assert build.config_for("float64") == build.BUILD


@needs_mkl
def test_auto_measures_once_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("BPGEN_BLAS", "auto")
    monkeypatch.setattr(blas, "_memo", {})
    calls = []
    real = blas.measure
    monkeypatch.setattr(blas, "measure", lambda dtype: calls.append(dtype) or real(dtype, reps=2))
    first = blas.choose("float32", str(tmp_path))
    assert first in (blas.OPENBLAS, blas.MKL) and calls == ["float32"]
    (entry,) = json.loads((tmp_path / "blas-choice.json").read_text()).values()
    assert entry["choice"] == first and set(entry["seconds"]) == {blas.OPENBLAS, blas.MKL}
    blas._memo.clear()                 # another process: the file answers
    assert blas.choose("float32", str(tmp_path)) == first and calls == ["float32"]
    monkeypatch.setattr(blas, "choose", lambda dtype, cache: blas.MKL)
    assert build.config_for("float32").blas == blas.MKL
    monkeypatch.setattr(blas, "choose", lambda dtype, cache: blas.OPENBLAS)
    assert build.config_for("float32") == build.BUILD


@needs_mkl
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mkl_and_openblas_agree(dtype, monkeypatch, tmp_path):
    mods, configs = {}, {}
    for choice in ("openblas", "mkl"):
        monkeypatch.setenv("BPGEN_BLAS", choice)
        configs[choice] = build.config_for(dtype)
        mods[choice] = bpgen.build(_arch(dtype, f"agree_{dtype}"), backend="c",
                                   out_dir=tmp_path / choice)
    assert configs["openblas"].blas == blas.OPENBLAS and configs["mkl"].blas == blas.MKL
    # the choice is in the extension's name and the cache key
    assert mods["openblas"].EXTENSION != mods["mkl"].EXTENSION
    assert configs["openblas"].cache_key() != configs["mkl"].cache_key()
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=2e-5, atol=1e-6)
    (lo, go, ho), (lm, gm, hm) = _results(mods["openblas"]), _results(mods["mkl"])
    np.testing.assert_allclose(lm, lo, **tol)
    for k in go:
        np.testing.assert_allclose(gm[k], go[k], **tol, err_msg=k)
        np.testing.assert_allclose(hm[k], ho[k], **tol, err_msg=k)


# in a fresh process: torch and numpy imported before (or after) an MKL
# module is loaded; every library gives the products it should.  (MKL's
# libmkl_rt, on its first call, opens its own parts RTLD_GLOBAL, so that
# cblas_dgemm is then in the global scope: the module does not use that name,
# see runtime/prelude.c, and NumPy, SciPy and PyTorch leave no BLAS name
# undefined for it to capture: theirs are prefixed or linked in.)
_SCRIPT = r"""
import importlib.util, sys
import numpy as np
first = sys.argv[2] == "first"
if first:
    import torch
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
if not first:
    import torch
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 20)); y = rng.integers(0, 5, 64)
p = m.init_params(0)
loss, grad = m.loss_and_grad(p, x, y)
assert "libmkl_rt" in open("/proc/self/maps").read(), "MKL not loaded"
a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 100))
exact = np.einsum("ik,kj->ij", a, b)
assert np.allclose(a @ b, exact, rtol=1e-12, atol=1e-12)
assert np.allclose(torch.from_numpy(a).mm(torch.from_numpy(b)).numpy(), exact,
                   rtol=1e-12, atol=1e-12)
print(repr(float(loss)), repr(float(grad["l0.W"].sum())))
"""


@needs_mkl
def test_mkl_coexists_with_torch_and_numpy(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setenv("BPGEN_BLAS", "openblas")
    ref = _results(bpgen.build(_arch("float64", "coexist"), backend="c",
                               out_dir=tmp_path / "o"))
    monkeypatch.setenv("BPGEN_BLAS", "mkl")
    mod = bpgen.build(_arch("float64", "coexist"), backend="c", out_dir=tmp_path / "m")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    for order in ("first", "last"):
        out = subprocess.run([sys.executable, "-c", _SCRIPT, mod.__file__, order],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "cannot use MKL" not in out.stderr, out.stderr
        loss, gsum = out.stdout.split()
        np.testing.assert_allclose(float(loss), ref[0], rtol=1e-12)
        np.testing.assert_allclose(float(gsum), ref[1]["l0.W"].sum(), rtol=1e-9, atol=1e-12)
