"""bpgen.distributed: full-dataset derivatives on a Dask LocalCluster.

Every function against the single-process module on data that fits (one
batch of all of it), for several chunkings, to 1e-12 relative in float64;
the same bits for 1, 2 and 4 workers; bad chunks and a foreign module
refused; a worker killed during a pass (a cluster of processes) and the
result unchanged; the spectrum; data from Zarr, .npz and .npy; save_dataset
and parameters stored in a Zarr store; the command line on Dask.
"""
import operator
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the distributed extra is not installed "
                          "(pip install 'bpgen[distributed]')")
da = pytest.importorskip("dask.array", reason="dask[array] is not installed")

import dask

import bpgen
import bpgen.distributed as bd

N = 23          # samples: no chunking below divides it

ARCHS = {
    # dense layers, labels, l2 on the weights
    "mlp": {"name": "dist_mlp", "input": {"features": 5},
            "layers": [{"type": "dense", "units": 6, "activation": "tanh"},
                       {"type": "dense", "units": 3}],
            "loss": {"type": "softmax_cross_entropy"}, "regularization": {"l2": 0.01}},
    # a loss over every step (weighted by real (sample, step) pairs), l2
    "gru_all": {"name": "dist_gru_all", "input": {"features": 3, "steps": 4},
                "layers": [{"type": "gru", "units": 3}, {"type": "dense", "units": 3}],
                "loss": {"type": "softmax_cross_entropy", "steps": "all"},
                "regularization": {"l2": 0.02}},
    # float32 (checked to float32's precision)
    "mlp32": {"name": "dist_mlp32", "dtype": "float32", "input": {"features": 5},
              "layers": [{"type": "dense", "units": 4, "activation": "sigmoid"},
                         {"type": "dense", "units": 2}],
              "loss": {"type": "sigmoid_binary_cross_entropy"},
              "regularization": {"l2": 0.01}},
    # the last step only, real targets
    "rnn_last": {"name": "dist_rnn_last", "input": {"features": 2, "steps": 3},
                 "layers": [{"type": "rnn", "units": 3}, {"type": "dense", "units": 2}],
                 "loss": {"type": "mse", "steps": "last"}},
}
# (arch, backend, with lengths)
CASES = [("mlp", "numpy", False), ("mlp", "c", False), ("gru_all", "numpy", True),
         ("gru_all", "numpy", False), ("rnn_last", "numpy", True), ("mlp32", "c", False)]
# samples per chunk, or the chunks themselves
CHUNKINGS = [N, 7, 1, (5, 1, 9, 8)]
FUNCTIONS = ["loss", "loss_and_grad", "hvp", "hmp", "ggn_vp", "hessian_diag",
             "per_sample_grad_norms"]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


_MODULES = {}


def _module(name, backend, tmp_path_factory):
    if (name, backend) not in _MODULES:
        out = tmp_path_factory.mktemp(f"{name}_{backend}")
        _MODULES[name, backend] = bpgen.build(ARCHS[name], backend=backend, out_dir=out)
    return _MODULES[name, backend]


def _data(mod, lengths, seed=0):
    rng = np.random.default_rng(seed)
    shape = (N,) + tuple(mod.STEPS and (mod.STEPS,) or ()) + (mod.INPUT_SHAPE[-1],)
    x = rng.standard_normal(shape).astype(mod.DTYPE)
    steps = (mod.STEPS,) if mod.SEQUENCE_OUTPUT and mod.LOSS_ALL_STEPS else ()
    if mod.TARGET_KIND == "labels":
        y = rng.integers(0, mod.OUTPUT_UNITS, (N,) + steps)
    elif mod.TARGET_RANGE is not None:
        y = rng.uniform(*mod.TARGET_RANGE, (N,) + steps + (mod.OUTPUT_UNITS,)).astype(mod.DTYPE)
    else:
        y = rng.standard_normal((N,) + steps + (mod.OUTPUT_UNITS,))
    lens = rng.integers(1, mod.STEPS + 1, N) if lengths else None
    return x, y, lens


def _point(mod, seed=1):
    rng = np.random.default_rng(seed)
    params = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(mod.DTYPE)
              for k, v in mod.init_params(seed).items()}
    v = mod.unflatten(rng.standard_normal(mod.N_PARAMS).astype(mod.DTYPE))
    V = rng.standard_normal((mod.N_PARAMS, 2)).astype(mod.DTYPE)
    return params, v, V


def _call(where, fn, mod, params, v, V, x, y, lens, **kw):
    args = {"hvp": (v,), "ggn_vp": (v,), "hmp": (V,)}.get(fn, ())
    if where is None:           # the single-process module
        extra = {} if lens is None else {"lengths": lens}
        return getattr(mod, fn)(params, x, y, *args, **extra)
    return getattr(bd, fn)(where, params, x, y, *args, lengths=lens, **kw)


def _flat(result):
    if isinstance(result, tuple):
        return np.concatenate([np.atleast_1d(_flat(r)) for r in result])
    if isinstance(result, dict):
        return np.concatenate([np.ravel(a) for a in result.values()])
    return np.ravel(np.asarray(result, dtype=np.float64))


def _dask_inputs(x, y, lens, chunking):
    if isinstance(chunking, int):
        return x, y, lens, {"chunks": chunking}
    rows = (chunking,)
    xd = da.from_array(x, chunks=rows + x.shape[1:])
    yd = da.from_array(y, chunks=rows + y.shape[1:])
    ld = None if lens is None else da.from_array(lens, chunks=rows)
    return xd, yd, ld, {}


@pytest.mark.parametrize("chunking", CHUNKINGS, ids=lambda c: f"chunks{c}")
@pytest.mark.parametrize("name, backend, lengths", CASES,
                         ids=[f"{a}-{b}{'-lengths' if c else ''}" for a, b, c in CASES])
def test_equals_single_process(client, tmp_path_factory, name, backend, lengths, chunking):
    mod = _module(name, backend, tmp_path_factory)
    x, y, lens = _data(mod, lengths)
    params, v, V = _point(mod)
    xd, yd, ld, kw = _dask_inputs(x, y, lens, chunking)
    for fn in FUNCTIONS:
        want = _flat(_call(None, fn, mod, params, v, V, x, y, lens))
        got = _flat(_call(ARCHS[name], fn, mod, params, v, V, xd, yd, ld, backend=backend,
                          client=client, **kw))
        assert got.shape == want.shape, fn
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert err <= (1e-12 if mod.DTYPE == np.float64 else 1e-5), (fn, err)


def test_same_bits_for_1_2_4_workers(tmp_path_factory):
    """The same bits for 1, 2 and 4 workers, whether the chunks are NumPy
    literals in the graph, persisted by Dask (spread: a task per chunk and
    per addition) or placed by bd.persist (a run of chunks per worker:
    whole subtrees of the reduction as single tasks)."""
    mod = _module("gru_all", "numpy", tmp_path_factory)
    x, y, lens = _data(mod, True)
    params, v, V = _point(mod)
    results = []
    for workers in (1, 2, 4):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      processes=False, dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as c:
            spread = c.persist([da.from_array(a, chunks=(3,) + a.shape[1:]) for a in (x, y, lens)])
            distributed.wait(spread)
            for data in ((x, y, lens), tuple(spread), bd.persist(x, y, lens, client=c, chunks=3)):
                out = [_flat(_call(ARCHS["gru_all"], fn, mod, params, v, V, *data,
                                   backend="numpy", client=c, chunks=3))
                       for fn in ("loss_and_grad", "hvp", "hessian_diag")]
                results.append(np.concatenate(out).tobytes())
    assert len(results) == 9 and len(set(results)) == 1


def test_placed_chunks_run_as_subtrees(tmp_path_factory):
    """Over data bd.persist placed (each worker one run of consecutive
    chunks), a pass is one task per whole subtree a worker holds plus the
    additions above them; over NumPy chunks (literals in the graph, held by
    no worker), a task per chunk and per addition."""
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, v, _ = _point(mod)
    n_chunks = -(-N // 3)                           # 8 chunks of 3 samples
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        placed = bd.persist(x, y, client=c, chunks=3)
        tasks = {}
        for name, (xd, yd, *_) in (("placed", placed), ("literals", (x, y))):
            with distributed.get_task_stream(c) as ts:
                bd.hvp(ARCHS["mlp"], params, xd, yd, v, client=c, backend="numpy", chunks=3)
            names = (str(d["key"][0] if isinstance(d["key"], tuple) else d["key"]).split("-")[0]
                     for d in ts.data)
            tasks[name] = sorted(t for t in names if t != "_block")   # the literals' own
    # 23 samples in halves by samples: chunks 0-3 (samples 0-11) on one worker, 4-7
    # on the other: the tree's two nodes of 4 chunks, and the addition of the two
    assert tasks["placed"] == ["_add", "_group", "_group"]
    assert tasks["literals"] == ["_add"] * (n_chunks - 1) + ["_chunk"] * n_chunks


def test_placement_strict_then_lifted(client, tmp_path_factory):
    """bd.persist computes each run under a strict restriction to its worker
    (no work stealing moves a chunk), then lifts the restrictions of every
    task of the chunks' graphs: each worker holds exactly its run, and a
    chunk lost with its worker could be recomputed anywhere (the killed-
    worker test with placed data runs it)."""
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    workers = sorted(client.nthreads())
    seen = []
    persist = client.persist

    def recording(blocks, **kw):
        seen.append(kw)
        return persist(blocks, **kw)
    client.persist = recording
    arrays = (da.from_array(x, chunks=(3, x.shape[1])) + 0, da.from_array(y, chunks=3))
    upstream = {k for a in arrays for k in dict(a.__dask_graph__())}
    try:
        xd, yd, _ = bd.persist(*arrays, client=client)
    finally:
        del client.persist
    assert seen == [{"workers": [w], "allow_other_workers": False} for w in workers]
    # 8 chunks of 3 samples, halves by samples: chunks 0-3 on the first worker
    who = client.who_has([xd, yd])
    for a in (xd, yd):
        keys = list(dask.core.flatten(a.__dask_keys__()))
        assert [tuple(who[k]) for k in keys] == [(workers[0],)] * 4 + [(workers[1],)] * 4
    tasks = client.cluster.scheduler.tasks
    held = [tasks[k] for k in upstream if k in tasks]
    assert len(held) >= 16 and all(t.worker_restrictions is None for t in held)


@pytest.mark.parametrize("bad", ["nan_x", "label_high", "label_negative"])
def test_bad_chunk_named_by_its_samples(client, tmp_path_factory, bad):
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, _, _ = _point(mod)
    x, y = x.copy(), y.copy()
    if bad == "nan_x":
        x[16, 2] = np.nan
    else:
        y[16] = mod.OUTPUT_UNITS if bad == "label_high" else -1
    for fn in ("loss_and_grad", "hessian_diag", "per_sample_grad_norms"):
        with pytest.raises(ValueError, match=r"chunk 2 \(samples \[14, 21\)\): "
                                             + ("x" if bad == "nan_x" else "y")):
            getattr(bd, fn)(ARCHS["mlp"], params, x, y, client=client, backend="numpy",
                            chunks=7)


def test_architecture_hash_mismatch_refused(client, tmp_path_factory):
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, _, _ = _point(mod)
    plan = bd._Plan(ARCHS["mlp"], "numpy", client, 1)
    plan.hash = "0" * 64            # the client's module is not the workers'
    with pytest.raises(ValueError, match="architecture hash mismatch"):
        bd._run("loss_and_grad", None, params, x, y, plan=plan, chunks=7)


def test_bad_arguments(client, tmp_path_factory):
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, v, _ = _point(mod)
    with pytest.raises(ValueError, match="arch: expected the architecture"):
        bd.loss_and_grad(mod, params, x, y, client=client)
    with pytest.raises(ValueError, match=r"params\['l0.W'\]: expected shape"):
        bd.loss_and_grad(ARCHS["mlp"], {**params, "l0.W": np.zeros((2, 2))}, x, y,
                         client=client, backend="numpy")
    with pytest.raises(ValueError, match="y: expected 23 rows"):
        bd.hvp(ARCHS["mlp"], params, x, y[:5], v, client=client, backend="numpy")
    with pytest.raises(ValueError, match="chunks: expected a positive"):
        bd.loss_and_grad(ARCHS["mlp"], params, x, y, client=client, backend="numpy",
                         chunks=0)
    with pytest.raises(ValueError, match=r"V: expected shape \(N_PARAMS"):
        bd.hmp(ARCHS["mlp"], params, x, y, np.zeros(mod.N_PARAMS), client=client,
               backend="numpy")


def test_architecture_file_read_again_when_changed(tmp_path):
    """A YAML architecture is parsed once per content (a solver calls the
    functions many times), and again when the file changes."""
    import yaml
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(ARCHS["mlp"]))
    first = bd._source(path)
    first["layers"][0]["units"] = 99              # the caller's copy only
    assert bd._source(path) == ARCHS["mlp"]
    path.write_text(yaml.safe_dump({**ARCHS["mlp"], "name": "dist_mlp_renamed"}))
    assert bd._source(path)["name"] == "dist_mlp_renamed"


def _slow(block, seconds):
    """x's block, available after ``seconds`` (stdlib tasks only: the worker
    processes import nothing of the tests)."""
    return dask.delayed(operator.getitem)([block, dask.delayed(time.sleep)(seconds)], 0)


def _slow_chunks(x, chunk=2, seconds=0.25):
    """x as Dask chunks of ``chunk`` samples, each available after ``seconds``."""
    return [da.from_delayed(_slow(x[i:i + chunk], seconds), shape=x[i:i + chunk].shape,
                            dtype=x.dtype) for i in range(0, N, chunk)]


def test_killed_worker_retried_result_unchanged(tmp_path_factory):
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, v, _ = _point(mod)
    xd = da.concatenate(_slow_chunks(x))   # 12 chunks of 0.25 s: ~1.5 s on 2 workers
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        want = bd.hvp(ARCHS["mlp"], params, xd, y, v, client=c, backend="numpy")
        box = {}
        run = threading.Thread(target=lambda: box.update(
            got=bd.hvp(ARCHS["mlp"], params, xd, y, v, client=c, backend="numpy")))
        pids = c.run(os.getpid)
        run.start()
        time.sleep(0.6)
        assert run.is_alive()          # the pass is under way
        os.kill(min(pids.values()), signal.SIGKILL)
        run.join(timeout=120)
        assert not run.is_alive()
        assert set(c.run(os.getpid).values()) != set(pids.values())   # a new worker
    assert _flat(box["got"]).tobytes() == _flat(want).tobytes()
    ref = mod.hvp(params, x, y, v)
    assert np.linalg.norm(_flat(want) - _flat(ref)) <= 1e-12 * np.linalg.norm(_flat(ref))


def test_killed_worker_placed_data_result_unchanged(tmp_path_factory):
    """A worker killed while holding its run of placed chunks (bd.persist):
    once the scheduler has replaced it, the next pass recomputes the lost
    chunks (0.25 s each) and gives the same bits."""
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, v, _ = _point(mod)
    parts = _slow_chunks(x)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        xd, yd, _ = bd.persist(da.concatenate(parts), y, client=c)
        want = bd.hvp(ARCHS["mlp"], params, xd, yd, v, client=c, backend="numpy")
        pids = c.run(os.getpid)
        dead = min(pids, key=pids.get)
        os.kill(pids[dead], signal.SIGKILL)
        t = time.monotonic()                # the scheduler removes it, the nanny restarts it
        while dead in c.nthreads() or len(c.nthreads()) < 2:
            assert time.monotonic() - t < 120
            time.sleep(0.2)
        got = bd.hvp(ARCHS["mlp"], params, xd, yd, v, client=c, backend="numpy")
        assert set(c.run(os.getpid).values()) != set(pids.values())   # a new worker
    assert _flat(got).tobytes() == _flat(want).tobytes()
    ref = mod.hvp(params, x, y, v)
    assert np.linalg.norm(_flat(want) - _flat(ref)) <= 1e-12 * np.linalg.norm(_flat(ref))


def test_local_cluster_settings():
    """bd.local_cluster: worker processes of one thread each, started under
    CLUSTER_CONFIG (no statistical profiler, a slow tick and system monitor):
    the workers' Dask configuration and the scheduler's tick say so; a bad
    worker count refused."""
    with bd.local_cluster(1) as cluster, distributed.Client(cluster) as c:
        assert list(c.nthreads().values()) == [1]
        for key, value in bd.CLUSTER_CONFIG.items():
            assert set(c.run(dask.config.get, key).values()) == {value}, key
        assert cluster.scheduler._tick_interval == 1.0
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="n_workers"):
            bd.local_cluster(bad)


def test_pinned_tasks_of_a_lost_worker_are_given_up(client, tmp_path_factory):
    """A pass's subtree tasks are pinned to the workers holding their chunks
    (no work stealing moves them, with their data); when such a worker has
    left the cluster the pass is given up (None) within a poll, and
    bd._reduce builds the graph again from where the chunks are now."""
    fut = client.submit(time.sleep, 4, pure=False)
    assert bd._result(client, fut, frozenset({"tcp://127.0.0.1:1"}), poll=0.1) is None
    assert not fut.done()               # given up before the task ended
    fut.cancel()
    done = client.submit(operator.add, 1, 2)
    assert bd._result(client, done, frozenset(client.nthreads())) == 3
    # the placed data's subtree tasks carry strict restrictions to their holder
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    xd, yd, _ = bd.persist(x, y, client=client, chunks=4)
    plan = bd._Plan(ARCHS["mlp"], "numpy", client, 1)
    root, pinned = bd._root(plan, "loss", plan.scatter(_point(mod)[0]), None,
                            bd._blocks(xd, yd, None, None, client))
    assert pinned and pinned <= set(client.nthreads())
    layers = root.__dask_graph__().layers
    pins = [ly.annotations for name, ly in layers.items() if "_group" in str(name)]
    assert pins and all(a["allow_other_workers"] is False and set(a["workers"]) <= pinned
                        for a in pins)


@pytest.mark.parametrize("full", [None, False])
def test_spectrum(client, tmp_path_factory, full):
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, _, _ = _point(mod)
    want = bpgen.spectrum(mod, params, x, y, k=3, smallest=True, full=full)
    got = bd.spectrum(ARCHS["mlp"], params, x, y, k=3, smallest=True, full=full,
                      client=client, backend="numpy", chunks=12)
    assert got["method"] == want["method"]
    for key in ("largest", "smallest"):
        tol = 1e-12 if full is None else 1e-8
        np.testing.assert_allclose(got[key], want[key], rtol=tol,
                                   atol=tol * abs(want["largest"][0]))


def test_data_on_disk(client, tmp_path_factory, tmp_path):
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    mod = _module("gru_all", "numpy", tmp_path_factory)
    x, y, lens = _data(mod, True)
    params, _, _ = _point(mod)
    want = _flat(mod.loss_and_grad(params, x, y, lengths=lens))
    np.savez(tmp_path / "d.npz", x=x, y=y, lengths=lens)
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    for key, a in (("x", x), ("y", y), ("lengths", lens)):
        group.create_array(key, shape=a.shape, dtype=a.dtype, chunks=(6,) + a.shape[1:])[...] = a
    np.save(tmp_path / "x.npy", x)
    sources = [bd.load(tmp_path / "d.npz", chunks=4), bd.load(tmp_path / "d.zarr"),
               {"x": bd.from_npy(tmp_path / "x.npy", chunks=5), "y": y, "lengths": lens}]
    for data in sources:
        got = _flat(bd.loss_and_grad(ARCHS["gru_all"], params, data["x"], data["y"],
                                     lengths=data["lengths"], client=client,
                                     backend="numpy"))
        assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)
    with pytest.raises(ValueError, match="has no array 'y'"):
        np.savez(tmp_path / "bad.npz", x=x)
        bd.load(tmp_path / "bad.npz")


def test_cli_spectrum_on_dask(tmp_path, tmp_path_factory, capsys):
    """bpgen spectrum --data DIR.zarr: an embedded LocalCluster (1 worker here),
    the same eigenvalues as the in-process run on the same data as .npz."""
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    import yaml

    from bpgen.cli import main
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    arch = tmp_path / "mlp.yaml"
    arch.write_text(yaml.safe_dump(ARCHS["mlp"]))
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    for key, a in (("x", x), ("y", y)):
        group.create_array(key, shape=a.shape, dtype=a.dtype, chunks=(10,) + a.shape[1:])[...] = a
    np.savez(tmp_path / "d.npz", x=x, y=y)
    common = [str(arch), "-k", "2", "--backend", "numpy", "--quiet"]
    assert main(["spectrum"] + common + ["--data", str(tmp_path / "d.npz")]) == 0
    local = capsys.readouterr().out
    assert main(["spectrum"] + common + ["--data", str(tmp_path / "d.zarr"),
                                         "--workers", "1"]) == 0
    on_dask = capsys.readouterr().out
    line = [ln for ln in local.splitlines() if ln.startswith("largest")]
    assert line and line == [ln for ln in on_dask.splitlines() if ln.startswith("largest")]
    assert main(["spectrum"] + common + ["--data", str(tmp_path / "d.npz"),
                                         "--workers", "2"]) == 2
    assert "--workers: only with" in capsys.readouterr().err


def test_save_dataset(client, tmp_path_factory, tmp_path):
    """save_dataset writes what load reads (from NumPy and from Dask arrays),
    and params with the architecture's hash: load_params gives them back,
    refuses them for another architecture, and says None for a store without."""
    pytest.importorskip("zarr", reason="zarr is not installed")
    mod = _module("gru_all", "numpy", tmp_path_factory)
    x, y, lens = _data(mod, True)
    params, _, _ = _point(mod)
    bd.save_dataset(tmp_path / "a.zarr", x, y, lens, params=params, arch=ARCHS["gru_all"],
                    chunks=6)
    bd.save_dataset(tmp_path / "b.zarr", da.from_array(x, chunks=(5, 4, 3)),
                    da.from_array(y, chunks=(5, 4)), da.from_array(lens, chunks=5))
    want = _flat(mod.loss_and_grad(params, x, y, lengths=lens))
    for name, rows in (("a.zarr", 6), ("b.zarr", 5)):
        data = bd.load(tmp_path / name)
        assert data["x"].chunks[0] == (rows,) * (N // rows) + (N % rows,)
        for key, a in (("x", x), ("y", y), ("lengths", lens)):
            assert data[key].dtype == a.dtype and np.array_equal(data[key].compute(), a)
        got = _flat(bd.loss_and_grad(ARCHS["gru_all"], params, data["x"], data["y"],
                                     lengths=data["lengths"], client=client,
                                     backend="numpy"))
        assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)
    back = bd.load_params(tmp_path / "a.zarr", ARCHS["gru_all"], backend="numpy")
    assert list(back) == list(mod.PARAM_SHAPES)
    assert all(back[k].tobytes() == params[k].tobytes() for k in params)
    assert bd.load_params(tmp_path / "b.zarr", mod) is None
    other = {**ARCHS["gru_all"], "layers": [{"type": "gru", "units": 4},
                                            {"type": "dense", "units": 3}]}
    with pytest.raises(ValueError, match=r"a.zarr \(group params\) holds the parameters "
                                         r"of another architecture: .*layers\[0\].units"):
        bd.load_params(tmp_path / "a.zarr", other, backend="numpy")
    with pytest.raises(ValueError, match="path: .*a.zarr exists"):
        bd.save_dataset(tmp_path / "a.zarr", x, y)
    with pytest.raises(ValueError, match="arch: save_dataset needs the architecture"):
        bd.save_dataset(tmp_path / "c.zarr", x, y, params=params)
    key = next(iter(mod.PARAM_SHAPES))
    with pytest.raises(ValueError, match=rf"params\['{key}'\]: expected shape"):
        bd.save_dataset(tmp_path / "c.zarr", x, y, arch=ARCHS["gru_all"],
                        params={**params, key: np.zeros((1, 1))})
    with pytest.raises(ValueError, match="y: expected 23 rows"):
        bd.save_dataset(tmp_path / "c.zarr", x, y[:4])
    assert sorted(os.listdir(tmp_path)) == ["a.zarr", "b.zarr"]     # nothing half-written


def test_cli_spectrum_params_in_store(tmp_path, tmp_path_factory, capsys):
    """bpgen spectrum --data DIR.zarr takes the parameters from the store's group
    params (save_dataset), or from --params P.npz (save_params): the same
    eigenvalues as the in-process command with the parameters in the .npz;
    both at once, or another architecture's, refused before any cluster."""
    pytest.importorskip("zarr", reason="zarr is not installed")
    import yaml

    from bpgen.cli import main
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, _, _ = _point(mod)
    arch = tmp_path / "mlp.yaml"
    arch.write_text(yaml.safe_dump(ARCHS["mlp"]))
    bd.save_dataset(tmp_path / "p.zarr", x, y, params=params, arch=ARCHS["mlp"], chunks=10)
    bd.save_dataset(tmp_path / "d.zarr", x, y, chunks=10)
    mod.save_params(tmp_path / "p.npz", params)
    np.savez(tmp_path / "d.npz", x=x, y=y, **params)
    common = [str(arch), "-k", "2", "--backend", "numpy", "--quiet"]

    def largest(argv):
        assert main(["spectrum"] + common + argv) == 0
        out = capsys.readouterr().out
        return [ln for ln in out.splitlines() if ln.startswith("largest")], out

    want, _ = largest(["--data", str(tmp_path / "d.npz")])
    got, out = largest(["--data", str(tmp_path / "p.zarr"), "--workers", "1"])
    assert want and got == want
    assert f"parameters from {tmp_path / 'p.zarr'} (group params)" in out
    got, out = largest(["--data", str(tmp_path / "d.zarr"), "--workers", "1",
                        "--params", str(tmp_path / "p.npz")])
    assert got == want and f"parameters from {tmp_path / 'p.npz'}" in out
    assert main(["spectrum"] + common + ["--data", str(tmp_path / "p.zarr"),
                                         "--params", str(tmp_path / "p.npz")]) == 2
    assert "--params: " in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**ARCHS["mlp"], "regularization": {"l2": 0.5}}))
    assert main(["spectrum", str(other)] + common[1:]
                + ["--data", str(tmp_path / "p.zarr")]) == 2
    err = capsys.readouterr().err
    assert "(group params) holds the parameters of another architecture" in err
    assert "l2: 0.01 in the file, 0.5 here" in err


NEWTON_ARCH = {"name": "dist_newton", "input": {"features": 6},
               "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                          {"type": "dense", "units": 3}],
               "loss": {"type": "softmax_cross_entropy"}, "regularization": {"l2": 0.01}}


def _example(name):
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(
        f"example_{os.path.basename(name)}", os.path.normpath(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("curvature, source", [("ggn", "zarr"), ("hessian", "npy")])
def test_newton_cg_example_on_dask(client, tmp_path, capsys, curvature, source):
    """examples/newton_cg.py --data: Newton-CG on full-dataset passes (on an
    embedded LocalCluster of processes, or --scheduler's cluster) takes the
    in-memory run's steps (the example's own Problem on the same arrays) to
    1e-12 relative, and the loss decreases."""
    pytest.importorskip("zarr", reason="zarr is not installed")
    import yaml
    nc = _example("newton_cg")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((150, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1)
    arch = tmp_path / "net.yaml"
    arch.write_text(yaml.safe_dump(NEWTON_ARCH))
    if source == "zarr":
        bd.save_dataset(tmp_path / "d.zarr", x, y, chunks=40)
        data = ["--data", str(tmp_path / "d.zarr")]
    else:
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        data = ["--data", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"),
                "--chunk", "40"]
    steps, out = 3, tmp_path / "solution.npz"
    if source == "zarr":
        cluster = ["--workers", "1"]
        where = "an embedded LocalCluster of 1 worker"
    else:
        cluster = ["--scheduler", client.scheduler.address]
        where = f"the scheduler at {client.scheduler.address}"
    argv = data + cluster + ["--arch", str(arch), "--backend", "numpy",
                             "--curvature", curvature, "--max-outer", str(steps),
                             "--target", "1e-9", "--top", "2", "--save-params", str(out)]
    assert nc.main(argv) == 0
    text = capsys.readouterr().out
    assert f"150 samples in 4 chunks on {where}" in text
    losses = [float(ln.split("loss")[1].split()[0]) for ln in text.splitlines()
              if ln.lstrip().startswith("newton-cg")]
    assert len(losses) == steps and all(b < a for a, b in zip(losses, losses[1:]))

    mod = bpgen.build(NEWTON_ARCH, backend="numpy", out_dir=tmp_path / "in_memory")
    theta0 = mod.flatten(mod.init_params(0))
    want, _, history = nc.newton_cg(nc.Problem(mod, x, y, curvature), theta0.copy(), 1e-9,
                                    max_outer=steps, log=lambda *a: None)
    got = mod.flatten(mod.load_params(out))
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)
    final = mod.loss(mod.unflatten(got), x, y)
    assert abs(final - history[-1]) <= 1e-12 * history[-1]
    assert final < history[0] and abs(losses[-1] - final) < 1e-6

    with pytest.raises(SystemExit):           # an existing file is never written over
        nc.main(argv)
    assert "--save-params: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nc.main(["--problem", "sine", "--scheduler", "tcp://127.0.0.1:1"])
    assert "--scheduler: only with --data" in capsys.readouterr().err


def test_dask_scaling_refuses_what_cannot_fit(capsys):
    """benchmarks/dask_scaling.py: a size whose data cannot be held is refused
    before anything is built or allocated; --million is 10⁶ samples."""
    bench = _example("../benchmarks/dask_scaling")
    assert bench.main(["--samples", str(10**12)]) == 2
    err = capsys.readouterr().err
    assert "--samples 1000000000000 needs about" in err and "GiB are available" in err
    need = bench.memory_needed(10**6, 10**4, False)
    assert 10**6 * 785 * 8 < need < 12 * 2**30
    with pytest.raises(SystemExit):
        bench.main(["--million", "--samples", "1000"])
    assert "--million is 10⁶ samples" in capsys.readouterr().err


def test_spectral_density_moments(client, tmp_path_factory):
    """Stochastic Lanczos quadrature: with m steps each probe's nodes and
    weights reproduce its moments vᵀHᵖv / vᵀv exactly for p < 2m (here
    p = 0..3 with m = 3), against the module's own Hessian."""
    mod = _module("mlp", "numpy", tmp_path_factory)
    x, y, _ = _data(mod, False)
    params, _, _ = _point(mod)
    res = bd.spectral_density(ARCHS["mlp"], params, x, y, probes=2, steps=3, seed=5,
                              client=client, backend="numpy", chunks=12)
    assert res["products"] == 6
    h = mod.hessian(params, x, y)
    rng = np.random.default_rng(5)
    for i in range(2):
        v = rng.choice([-1.0, 1.0], size=mod.N_PARAMS)
        hv = v.copy()
        for p in range(4):
            want = v @ hv / (v @ v)
            got = np.sum(res["weights"][i] * res["nodes"][i] ** p)
            assert abs(got - want) <= 1e-10 * max(1.0, abs(want)), (i, p)
            hv = h @ hv
    lo, hi = np.nanmin(res["nodes"]) - 0.2, np.nanmax(res["nodes"]) + 0.2
    grid = np.linspace(lo, hi, 20001)
    dens = bd.smooth_density(res, grid, 0.01)      # the weights sum to 1 per probe
    assert abs(np.trapezoid(dens, grid) - 1) < 1e-6
