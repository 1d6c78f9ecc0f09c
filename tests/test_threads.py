"""The C module's threads: the default count (every core the process may
use, fewer when the environment says so), set_threads, the rule for
concurrent calls (large calls one at a time with the count, every other call
with 1 thread), and a large call's batch split across the count's threads
(runtime/split.c), which keep results bitwise reproducible for a given count
and equal to the one-thread results to rounding.  The suite itself runs its
modules at 1 thread (conftest.py)."""
import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import mlp
from test_fastcall import ARCHS as CALL_ARCHS, _point as _call_point
from test_generated import sampled_arch

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
    """The module, its count (the suite's 1) and split rule restored
    afterwards."""
    mod = builder(ARCH, "c")
    before, rule = mod.get_threads(), mod._split_rule()
    yield mod
    mod._split_rule(*rule)
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
    other = builder(sampled_arch("softmax_cross_entropy", "float64"), "c")   # built anyway
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
    for rows in (2**62, 8):         # large calls with the BLAS's threads, then split
        threads._split_rule(rows)
        alone = [_grad(threads, *p) for p in points]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda p: _grad(threads, *p), points * 3))
        for i, got in enumerate(together):
            assert np.array_equal(got, alone[i % len(points)]), (rows, i)
    assert threads.get_threads() == 2


def test_which_calls_split(threads):
    """Large calls (work >= 4e6: 68,874 parameters + the workspace per
    sample, so from 59 samples) split into min(n, N // rows) slices when
    that is 2 or more (rows: 32 by default for dense layers alone), and are
    the BLAS's otherwise; small calls do neither.  Each result equals the
    one-thread result to rounding."""
    assert threads._split_rule() == (32, 4e6)       # dense layers alone: 32 a slice
    cases = [(2, 64, True), (2, 63, False), (3, 96, True), (2, 40, False), (1, 256, False),
             (2, 256, True, 8), (4, 96, True, 8), (2, 40, False, 8),
             (2, 100, False, 64), (2, 128, True, 64)]      # 64 samples a slice at least
    for n, batch, splits, *rows in cases:
        threads._split_rule(rows[0] if rows else 32)
        point = _point(threads, batch, seed=batch)
        threads.set_threads(1)
        one = _grad(threads, *point)
        threads.set_threads(n)
        before = threads._split_calls()
        got = _grad(threads, *point)
        assert threads._split_calls() == before + splits, (n, batch)
        assert np.max(np.abs(got - one)) <= 1e-12 * np.max(np.abs(one)), (n, batch)


def _all_results(mod, params, x, y, v, python=False):
    """forward, loss, loss_and_grad and hvp as one flat array each."""
    pre = "_python_" if python else ""
    loss, grads = getattr(mod, pre + "loss_and_grad")(params, x, y)
    return [getattr(mod, pre + "forward")(params, x).ravel(),
            np.array([getattr(mod, pre + "loss")(params, x, y)]),
            np.concatenate([[loss], mod.flatten(grads)]),
            mod.flatten(getattr(mod, pre + "hvp")(params, x, y, v))]


@pytest.fixture
def split_everything():
    """A function that builds a module whose every call of 2 or more samples
    splits when the count is above 1 (its rule, and the count, restored
    afterwards)."""
    built = []

    def make(builder, arch):
        mod = builder(arch, "c")
        built.append((mod, mod.get_threads(), mod._split_rule(1, 0), mod._split_together(1)))
        return mod
    yield make
    for mod, count, (rows, work), least in built:
        mod._split_rule(rows, work)
        mod._split_together(least)
        mod.set_threads(count)


# l2 (labels, float64); float32 with a float target at every step
# (time-major, truncated BPTT); labels at every step (time-major one-hot);
# only the last step scored (y batch-first, forward's output time-major)
# float32 dense layers without l2: the weight gradients made by the slices
# together (runtime/gemm_tn_out.c), every one of them (split_everything)
@pytest.mark.parametrize("aid", ["mlp_ce64", "mlp_mse32", "lstm_bce_all32", "gru_ce_all",
                                 "rnn_mse_last"])
def test_split_equals_one_thread_and_is_reproducible(builder, split_everything, aid):
    """Every entry point split into 2 or 3 slices (N = 7: not divisible;
    N = 2 with 3 threads: 2 slices of 1): the one-thread result to rounding,
    the same bits every time, and the same bits through the Python path.
    Where the module has weight gradients the slices make together, they
    did."""
    arch = CALL_ARCHS[aid]
    mod = split_everything(builder, arch)
    tol = 1e-12 if mod.DTYPE == np.float64 else 1e-5
    for batch in (7, 2, 1):
        params, x, y = _call_point(arch, mod, batch, seed=batch)
        v = mod.unflatten(np.linspace(-1, 1, mod.N_PARAMS).astype(mod.DTYPE))
        mod.set_threads(1)
        one = _all_results(mod, params, x, y, v)
        for n in (2, 3):
            mod.set_threads(n)
            before, made = mod._split_calls(), mod._split_products()
            got = _all_results(mod, params, x, y, v)
            assert mod._split_calls() == before + (4 if batch > 1 else 0), (batch, n)
            together = mod._split_together() and batch > 1
            assert (mod._split_products() > made) == bool(together), (batch, n)
            for name, a, b in zip(("forward", "loss", "loss_and_grad", "hvp"), got, one):
                assert np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-30), \
                    (batch, n, name)
            again = _all_results(mod, params, x, y, v)
            slow = _all_results(mod, params, np.asfortranarray(x), y, v, python=True)
            for a, b, c in zip(got, again, slow):
                assert a.tobytes() == b.tobytes() == c.tobytes(), (batch, n)


@pytest.mark.parametrize("aid", ["gru_ce_all", "rnn_mse_last"])
def test_split_with_lengths_equals_one_thread(builder, split_everything, aid):
    """A padded batch (lengths) split into 2 or 3 slices: each slice gets its
    rows of the masks, and a loss over every step weights the slices by
    their share of the real (sample, step) pairs (not of the samples): the
    one-thread result to rounding, the same bits every time."""
    arch = CALL_ARCHS[aid]
    mod = split_everything(builder, arch)
    params, x, y = _call_point(arch, mod, 7, seed=5)
    steps = x.shape[1]
    lengths = np.array([steps, 1, 2, steps, 1, 1, steps - 1])   # slices' shares differ
    v = mod.unflatten(np.linspace(-1, 1, mod.N_PARAMS).astype(mod.DTYPE))

    def results():
        loss, grads = mod.loss_and_grad(params, x, y, lengths=lengths)
        return [mod.forward(params, x, lengths=lengths).ravel(),
                np.array([mod.loss(params, x, y, lengths=lengths)]),
                np.concatenate([[loss], mod.flatten(grads)]),
                mod.flatten(mod.hvp(params, x, y, v, lengths=lengths))]
    mod.set_threads(1)
    one = results()
    for n in (2, 3):
        mod.set_threads(n)
        before = mod._split_calls()
        got = results()
        assert mod._split_calls() == before + 4, n
        for name, a, b in zip(("forward", "loss", "loss_and_grad", "hvp"), got, one):
            assert np.max(np.abs(a - b)) <= 1e-12 * max(np.max(np.abs(b)), 1e-30), (n, name)
        for a, b in zip(got, results()):
            assert a.tobytes() == b.tobytes(), n


def test_split_l2_weights_sum_to_one(builder, split_everything):
    """With l2 and no data term to speak of (zero inputs, so the data
    gradient of the first layer's W is 0), the first layer's W gradient is
    lam * W from every slice, weighted N_i / N: the sum is lam * W to
    rounding, for uneven slices too."""
    arch = CALL_ARCHS["mlp_ce64"]
    lam = arch["regularization"]["l2"]
    mod = split_everything(builder, arch)
    params = mod.init_params(3)
    mod.set_threads(3)
    x = np.zeros((7,) + tuple(mod.INPUT_SHAPE))
    _, grads = mod.loss_and_grad(params, x, np.arange(7) % mod.OUTPUT_UNITS)
    np.testing.assert_allclose(grads["l0.W"], lam * params["l0.W"], rtol=1e-15, atol=1e-18)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_split_calls_work_in_a_forked_child(threads):
    """No thread or lock outlives a call, so a child forked after split
    calls makes them too (and gets the same bits)."""
    threads.set_threads(2)
    threads._split_rule(8)
    point = _point(threads, 256)
    before = threads._split_calls()
    want = _grad(threads, *point)
    threads._split_rule(2**62)
    assert threads._split_calls() == before + 1
    pid = os.fork()
    if pid == 0:                    # the child: exit 0 only with the same bits
        code = 1
        try:
            import signal
            signal.alarm(60)
            threads._split_rule(8)
            code = 0 if np.array_equal(_grad(threads, *point), want) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


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


def test_split_weight_gradients_made_together(threads):
    """The 256 x 256 weight gradient (65,536 entries: made together by
    default) of a split call: each slice a block of its columns over every
    slice's samples, one product a call; the one-thread result to rounding,
    the same bits every time, at 2 and 3 slices; none made together when the
    least is above its size, and the same result to rounding."""
    threads._split_rule(8)
    least = threads._split_together()
    assert least >= 1
    point = _point(threads, 96, seed=4)
    threads.set_threads(1)
    one = _grad(threads, *point)
    try:
        for n in (2, 3):
            threads.set_threads(n)
            made = threads._split_products()
            got = _grad(threads, *point)
            assert threads._split_products() == made + 1, n
            assert np.array_equal(_grad(threads, *point), got), n
            assert np.max(np.abs(got - one)) <= 1e-12 * np.max(np.abs(one)), n
            threads._split_together(2**62)
            made = threads._split_products()
            alone = _grad(threads, *point)
            assert threads._split_products() == made, n
            assert np.max(np.abs(alone - one)) <= 1e-12 * np.max(np.abs(one)), n
            threads._split_together(least)
    finally:
        threads._split_together(least)


def test_split_call_with_a_non_finite_result_takes_the_python_path(threads):
    """A split call's threads check the summed output for the entry point
    (so it is not read again): a result that overflows is still handed to
    the Python path, at 2 threads as at 1, with the same result."""
    threads._split_rule(8)
    params, x, y = _point(threads, 96, seed=6)
    params = dict(params, **{"l1.W": np.full_like(params["l1.W"], 1e308)})   # inf logits
    got = []
    for n in (1, 2):
        threads.set_threads(n)
        before, calls = threads._fastcall_counts()["loss_and_grad"], threads._split_calls()
        got.append(_grad(threads, params, x, y))
        assert threads._fastcall_counts()["loss_and_grad"][1] == before[1] + 1, n
        assert (threads._split_calls() > calls) == (n > 1), n    # and the Python path's
    assert not np.all(np.isfinite(got[0]))
    assert np.max(np.abs(np.nan_to_num(got[1] - got[0]))) <= 1e-12 * np.max(np.abs(
        np.nan_to_num(got[0]))) and np.array_equal(np.isnan(got[0]), np.isnan(got[1]))
