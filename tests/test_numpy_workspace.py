"""The NumPy backend keeps its temporaries in a per-thread workspace between
calls: results handed to the caller stay fresh arrays, threads do not share
temporaries, and a change of batch size or release_workspace() is harmless."""
import threading

import numpy as np

from bpgen.check import sample_point
from bpgen.spec import load_spec

from conftest import mlp

RNN = {"name": "ws_rnn", "dtype": "float64", "input": {"features": 3, "steps": 6},
       "layers": [{"type": "lstm", "units": 5}, {"type": "dense", "units": 2}],
       "loss": {"type": "mse", "steps": "all"}}


def _points(arch, mod, batches=(4, 4, 7)):
    spec = load_spec(arch)
    return [sample_point(spec, mod, batch=b, seed=s) for s, b in enumerate(batches)]


def _same(a, b):
    return a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])


def _copy(result):
    return result[0], {k: g.copy() for k, g in result[1].items()}


def test_results_stay_fresh_across_calls(builder):
    for arch in (mlp("tanh", "softmax_cross_entropy", name="ws_mlp"), RNN):
        mod = builder(arch, "numpy")
        points = _points(arch, mod)
        first = mod.loss_and_grad(*points[0])
        kept = _copy(first)
        for p in points[1:] + points[:1]:          # other data, another batch size, the same
            mod.loss_and_grad(*p)
            mod.hvp(*p, p[0])
        assert _same(first, kept)                  # not overwritten by the later calls
        assert _same(mod.loss_and_grad(*points[0]), kept)
        mod.release_workspace()
        mod.release_workspace()
        assert _same(mod.loss_and_grad(*points[0]), kept)


def test_threads_do_not_share_temporaries(builder):
    mod = builder(RNN, "numpy")
    points = _points(RNN, mod, batches=(3, 5, 3, 8))
    want = [_copy(mod.loss_and_grad(*p)) for p in points]
    errors = []

    def work(k):
        try:
            for _ in range(30):
                if not _same(mod.loss_and_grad(*points[k]), want[k]):
                    errors.append(k)
        except Exception as exc:       # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(points))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
