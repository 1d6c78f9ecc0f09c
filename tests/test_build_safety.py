"""Safe files and cache: generated files get the usual permissions, two
processes building the same architecture into one directory both end with a
valid module, a build killed mid-compile leaves no module behind and the next
build succeeds, and a corrupted cached or installed extension is detected and
rebuilt instead of loaded."""
import glob
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import bpgen
from bpgen.backends.c import build as cbuild

from conftest import ROOT, mlp

SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import bpgen
mod = bpgen.build(json.loads(sys.argv[1]), backend=sys.argv[2], out_dir=sys.argv[3])
p = mod.init_params(seed=0)
import numpy as np
x = np.linspace(-1, 1, 3 * int(np.prod(mod.INPUT_SHAPE))).reshape((3,) + mod.INPUT_SHAPE)
print(repr(float(mod.forward(p, x).sum())))
"""


def _run(arch, backend, out, env, wait=True):
    cmd = [sys.executable, "-c", SCRIPT.format(root=ROOT), json.dumps(arch), backend, str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return float(out.strip())


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, BPGEN_CACHE_DIR=str(tmp_path / "cache"))
    return e


def test_files_have_the_usual_permissions(tmp_path, monkeypatch):
    monkeypatch.setenv("BPGEN_CACHE_DIR", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        bpgen.build(mlp(name="perm"), backend="c", out_dir=tmp_path / "g")
    finally:
        os.umask(old)
    for path in glob.glob(str(tmp_path / "g" / "*")):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        want = 0o755 if path.endswith(".so") else 0o644
        assert mode == want, (path, oct(mode))


def test_concurrent_builds_into_one_directory(tmp_path, env):
    arch = mlp(name="race")
    out = tmp_path / "g"
    procs = [_run(arch, backend, out, env, wait=False) for backend in ("c", "c", "numpy", "c")]
    values = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        values.append(float(stdout))
    assert max(values) - min(values) <= 1e-12
    assert _run(arch, "c", out, env) == pytest.approx(values[0], abs=1e-12)


def test_a_build_killed_mid_compile_leaves_nothing_half_written(tmp_path, env):
    arch = {"name": "killed", "input": {"features": 3, "steps": 6},
            "layers": [{"type": "lstm", "units": 4}, {"type": "dense", "units": 2}],
            "loss": "mse"}
    out = tmp_path / "g"
    proc = _run(arch, "c", out, env, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline and not glob.glob(str(tmp_path / "cache" / ".*")):
        time.sleep(0.05)       # the compile has started: its temporary directory exists
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not glob.glob(str(out / "killed_c.py"))       # no wrapper without its extension
    assert np.isfinite(_run(arch, "c", out, env))


def test_corrupted_extensions_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("BPGEN_CACHE_DIR", str(tmp_path / "cache"))
    arch = mlp(name="corrupt")
    mod = bpgen.build(arch, backend="c", out_dir=tmp_path / "a")
    p = mod.init_params(seed=1)
    x, y = np.ones((2, 4)), np.zeros((2, 3))
    want = mod.loss(p, x, y)
    cached = glob.glob(str(tmp_path / "cache" / "*" / "*.so"))
    assert len(cached) == 1
    with open(cached[0], "r+b") as fh:       # truncated, as by a full disk
        fh.truncate(1000)
    mod2 = bpgen.build(arch, backend="c", out_dir=tmp_path / "b")
    assert mod2.loss(p, x, y) == want
    assert cbuild._cached(cached[0])           # rebuilt, with a matching hash
    # a corrupted copy next to a wrapper: the wrapper rebuilds it on import
    installed = glob.glob(str(tmp_path / "b" / "*.so"))[0]
    with open(installed, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 4000)
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); "
            f"sys.path.insert(0, {str(tmp_path / 'b')!r}); import numpy as np, corrupt_c as m;"
            "print(m.loss(m.init_params(seed=1), np.ones((2, 4)), np.zeros((2, 3))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, BPGEN_CACHE_DIR=str(tmp_path / "cache")),
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout) == want
