"""The C module's BLAS threads: the default count (every core the process may
use, fewer when the environment says so), set_threads, and the rule for
concurrent calls (large calls one at a time with the count, every other call
with 1 thread), which keeps results bitwise reproducible for a given count.
The suite itself runs its modules at 1 thread (conftest.py)."""
import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import mlp

# 256 -> 256 -> 10: one sample's work ~68 k, so a batch of 256 is a large
# call (>= 4e6) whose 256 x 256 x 256 products OpenBLAS threads
ARCH = mlp("tanh", "softmax_cross_entropy", hidden=(256,), out=10, features=256,
           name="threads_mlp")


def _point(mod, n, seed=0):
    rng = np.random.default_rng(seed)
    return mod.init_params(seed), rng.standard_normal((n, 256)), rng.integers(0, 10, n)


def _grad(mod, params, x, y):
    loss, grads = mod.loss_and_grad(params, x, y)
    return np.concatenate([[loss], mod.flatten(grads)])


@pytest.fixture
def threads(builder):
    """The module, its count restored (the suite's 1) afterwards."""
    mod = builder(ARCH, "c")
    before = mod.get_threads()
    yield mod
    mod.set_threads(before)


def _fresh(mod, code, env):
    """Run ``code`` in a fresh interpreter that imports the built module as
    ``mod`` (no BPGEN/OMP/OPENBLAS/MKL thread variables but those in env)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("BPGEN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                          "MKL_NUM_THREADS")}
    here = os.path.dirname(mod.__file__)
    name = os.path.splitext(os.path.basename(mod.__file__))[0]
    script = (f"import sys, json, os; sys.path.insert(0, {here!r}); import {name} as mod\n"
              + code)
    done = subprocess.run([sys.executable, "-c", script], env=dict(clean, **env),
                          capture_output=True, text=True, timeout=120)
    return done


def test_default_is_every_core_the_process_may_use(threads):
    cores = len(os.sched_getaffinity(0))
    code = ("print(json.dumps([mod.get_threads(), mod._default_threads()]))\n"
            "for var, value in [('OMP_NUM_THREADS', '1'), ('OPENBLAS_NUM_THREADS', '1'),\n"
            "                   ('MKL_NUM_THREADS', '1'), ('OMP_NUM_THREADS', '1,2'),\n"
            "                   ('OMP_NUM_THREADS', 'junk'), ('OPENBLAS_NUM_THREADS', '0'),\n"
            "                   ('MKL_NUM_THREADS', '999')]:\n"
            "    os.environ[var] = value\n"
            "    print(json.dumps([var, value, mod._default_threads()]))\n"
            "    del os.environ[var]\n"
            "os.environ['OMP_NUM_THREADS'] = '1'; os.environ['BPGEN_NUM_THREADS'] = '3'\n"
            "print(json.dumps(['both', '', mod._default_threads()]))\n")
    done = _fresh(threads, code, {})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == [cores, cores]
    got = {(var, value): n for var, value, n in lines[1:]}
    assert got == {("OMP_NUM_THREADS", "1"): 1, ("OPENBLAS_NUM_THREADS", "1"): 1,
                   ("MKL_NUM_THREADS", "1"): 1, ("OMP_NUM_THREADS", "1,2"): 1,
                   ("OMP_NUM_THREADS", "junk"): cores, ("OPENBLAS_NUM_THREADS", "0"): cores,
                   ("MKL_NUM_THREADS", "999"): cores, ("both", ""): 3}


def test_environment_limits_the_default_at_load(threads):
    done = _fresh(threads, "print(mod.get_threads())", {"OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
    done = _fresh(threads, "print(mod.get_threads())", {"BPGEN_NUM_THREADS": "2"})
    assert done.stdout.split() == ["2"]
    done = _fresh(threads, "", {"BPGEN_NUM_THREADS": "two"})
    assert done.returncode != 0
    assert "BPGEN_NUM_THREADS: expected a positive integer, got 'two'" in done.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs 2 cores and os.sched_setaffinity")
def test_default_follows_the_affinity_mask(threads):
    cpu = min(os.sched_getaffinity(0))
    code = "print(mod.get_threads())"
    clean = {k: v for k, v in os.environ.items() if k != "BPGEN_NUM_THREADS"}
    here = os.path.dirname(threads.__file__)
    name = os.path.splitext(os.path.basename(threads.__file__))[0]
    done = subprocess.run(
        [sys.executable, "-c", f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); "
         f"sys.path.insert(0, {here!r}); import {name} as mod; {code}"],
        env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


def test_set_threads_is_checked_and_process_wide(threads, builder):
    other = builder(mlp(name="threads_other"), "c")
    threads.set_threads(2)
    assert threads.get_threads() == other.get_threads() == 2
    other.set_threads(1)
    assert threads.get_threads() == 1
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match="n: expected a positive integer"):
            threads.set_threads(bad)
    assert threads.get_threads() == 1


def test_results_reproducible_for_a_thread_count(threads):
    params, x, y = _point(threads, 256)
    threads.set_threads(1)
    one = _grad(threads, params, x, y)
    threads.set_threads(2)
    two = _grad(threads, params, x, y)
    assert np.array_equal(_grad(threads, params, x, y), two)          # the same bits
    assert np.max(np.abs(two - one)) <= 1e-12 * np.max(np.abs(one))   # rounding only
    # the Python path (hessian_diag goes through call.py's _call) too
    small = _point(threads, 64, seed=1)
    d2 = threads.flatten(threads.hessian_diag(*small))
    assert np.array_equal(threads.flatten(threads.hessian_diag(*small)), d2)


def test_concurrent_calls_match_sequential_ones(threads):
    """Large calls (batch 256) and small ones (batch 4) from 4 Python threads
    at 2 BLAS threads: each result has the bits it has when run alone."""
    threads.set_threads(2)
    points = [_point(threads, n, seed=s) for s, n in enumerate([256, 4, 256, 4, 512, 16] * 2)]
    alone = [_grad(threads, *p) for p in points]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: _grad(threads, *p), points * 3))
    for i, got in enumerate(together):
        assert np.array_equal(got, alone[i % len(points)]), i
    assert threads.get_threads() == 2


def test_threadpoolctl_limits_the_default_at_load(threads):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is optional (not installed)")
    code = ("import threadpoolctl, numpy\n"
            "with threadpoolctl.threadpool_limits(1):\n"
            "    inside = mod._default_threads()\n"
            "print(json.dumps([inside, mod._default_threads()]))\n")
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    done = _fresh(threads, code, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, len(os.sched_getaffinity(0))]
