"""bpgen.distributed: 2 workers against 1 (docs/distributed.md, "Measurements").

The 784-256-256-10 MLP (float64, C backend), generated data (x standard
normal, labels uniform) made on the workers and kept there (persisted), so
the timings are the derivatives, not the data's generation.  By default
the data is placed by ``bpgen.distributed.persist`` (each worker one run of
consecutive chunks: a pass is a few tasks per worker); ``--placement dask``
persists it with ``client.persist`` (chunks spread as Dask computes them:
up to a task per chunk and per addition).  Each pass's CPU time of this
process (the client, and the scheduler and nannies, which live in it) and
of each worker process (its task thread, and its other threads: the event
loop) is printed too.  One LocalCluster of worker processes (1 thread
each) is alive at a time: each round starts the 1-worker cluster and the
2-worker one in turn (the order alternating by round), generates and
places the same data on it, times ``loss_and_grad`` and ``hvp``, and
closes it (the start-up outside the timings); the speed-up is the median
over rounds of each round's ratio.  The clusters run with
``bpgen.distributed.CLUSTER_CONFIG`` (no statistical profiler, a 1 s
tick, a 5 s system monitor; ``--dask-defaults``: Dask's own settings),
the same for 1 and 2 workers.  Also: one chunk's time in this process
(the per-chunk time of the projection), the single-process module on the
whole data when it fits (--single), the module's thread count on each
worker, the peak resident memory of every worker process, and whether
the 1- and 2-worker results are the same bits.  A control, in the same
rounds: the same chunk's ``loss_and_grad`` run on every worker at once
with ``client.run`` (no Dask scheduling), 2 workers' work per second over
1 worker's: what the machine's cores give at that moment (1.0 when other
processes take the second core, 2.0 on two idle cores).

Usage, from the repository root::

    python benchmarks/dask_scaling.py [--samples 100000] [--chunk 10000] [--rounds 5] [--placement runs|dask] [--dask-defaults]
    python benchmarks/dask_scaling.py --million     # the issue's size, on a quiet machine

``--million`` is 10⁶ samples in chunks of 10⁴, 3 rounds (``--rounds`` still
applies): 6.3 GB of x per cluster, one cluster's data in memory at a time
(about 9.5 GB with the workers' own memory), checked against the memory
available before anything is allocated.  It prints, after timing one chunk
in this process, how long the rounds should take.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bpgen
import bpgen.distributed as bd

ARCH = {"name": "dist_mlp784", "input": {"features": 784},
        "layers": [{"type": "dense", "units": 256, "activation": "relu"},
                   {"type": "dense", "units": 256, "activation": "relu"},
                   {"type": "dense", "units": 10}],
        "loss": {"type": "softmax_cross_entropy"}, "regularization": {"l2": 1e-4}}


def _cpu(proc):
    """User and system CPU seconds of a process so far."""
    t = proc.cpu_times()
    return t.user + t.system


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib():
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def _executor_tid():
    """The native id of the worker's thread that runs tasks (one thread per
    worker)."""
    import threading
    ids = [t.native_id for t in threading.enumerate() if "Dask-Default-Threads" in t.name]
    return ids[0] if len(ids) == 1 else None


def _threads_cpu(proc, tid):
    """CPU seconds of a worker process so far: (its task thread's, its other
    threads')."""
    mine = other = 0.0
    for t in proc.threads():
        if t.id == tid:
            mine += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    return mine, other


def _module_threads(h):
    """The threads the module's BLAS uses for a large call in this worker (the
    value bpgen.distributed's tasks set: 1)."""
    return bd.worker_module(ARCH, "c", h).get_threads()


def _busy(chunk, reps, h):
    """The cores' control: ``reps`` loss_and_grad of one chunk on each worker
    at once (client.run), nothing of Dask's scheduling in it."""
    mod = bd.worker_module(ARCH, "c", h)
    mod.set_threads(1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((chunk, 784)), rng.integers(0, 10, chunk)
    p = mod.init_params(0)
    for _ in range(reps):
        mod.loss_and_grad(p, x, y)
    return True


#: what --million sets
MILLION = {"samples": 1_000_000, "chunk": 10_000, "rounds": 3}
#: the resident memory of a worker process beyond its data and its chunk
#: (Python, NumPy, Dask, the module: measured 490-530 MiB at 10⁵ samples)
WORKER_BASE = 600 * 2**20


def _mem_available():
    """The memory available, in bytes: MemAvailable of /proc/meminfo, else
    psutil's (None when neither is there)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def memory_needed(n, chunk, single):
    """Bytes the run holds at its peak: one cluster's persisted data (x
    float64 and y int64; one cluster is alive at a time), two workers' base
    and two chunks in flight each, and with --single the whole data set and
    the module's workspace for it here."""
    data = n * (784 + 1) * 8
    per_chunk = chunk * (784 + 4 * (256 + 256 + 10)) * 8
    need = data + 2 * (WORKER_BASE + 2 * per_chunk)
    if single:
        need += data + n * 4 * (256 + 256 + 10) * 8
    return need


def _flat(r):
    if isinstance(r, tuple):
        return np.concatenate([np.atleast_1d(r[0]), _flat(r[1])])
    return np.concatenate([np.ravel(a) for a in r.values()])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=None, help="N (default 100000)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="samples per chunk (default 10000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5)")
    ap.add_argument("--million", action="store_true",
                    help="the issue's size: --samples 1000000 --chunk 10000, 3 rounds")
    ap.add_argument("--placement", choices=("runs", "dask"), default="runs",
                    help="where the persisted chunks live: runs (default), "
                         "bpgen.distributed.persist, each worker one run of consecutive "
                         "chunks, a few tasks per worker and pass; dask, client.persist, "
                         "chunks spread as Dask computes them, a task per chunk and "
                         "per addition")
    ap.add_argument("--dask-defaults", action="store_true",
                    help="start the clusters with Dask's default settings instead of "
                         "bpgen.distributed.CLUSTER_CONFIG (profiler, tick, system monitor)")
    ap.add_argument("--single", action="store_true",
                    help="also the single-process module on the whole data")
    args = ap.parse_args(argv)
    defaults = MILLION if args.million else {"samples": 100_000, "chunk": 10_000,
                                             "rounds": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        elif getattr(args, key) < 1:
            ap.error(f"--{key}: expected a positive integer, got {getattr(args, key)}")
    if args.million and args.samples != MILLION["samples"]:
        ap.error("--samples: --million is 10⁶ samples")
    need, avail = memory_needed(args.samples, args.chunk, args.single), _mem_available()
    if avail is not None and need > 0.9 * avail:
        print(f"dask_scaling.py: --samples {args.samples}"
              f"{' with --single' if args.single else ''} needs about {need / 2**30:.1f} GiB "
              f"(one cluster's data in memory), and {avail / 2**30:.1f} GiB are "
              f"available: fewer --samples{', or no --single' if args.single else ''}",
              file=sys.stderr)
        return 2
    import dask
    import dask.array as da
    import distributed
    import psutil

    mod = bpgen.build(ARCH, backend="c", out_dir=os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "bpgen-dist-bench"))
    mod.set_threads(1)
    params = mod.init_params(0)
    v = mod.unflatten(np.random.default_rng(1).standard_normal(mod.N_PARAMS))
    n, chunk = args.samples, args.chunk
    n_chunks = -(-n // chunk)
    print(f"784-256-256-10 MLP, {mod.N_PARAMS} parameters, float64, C backend; "
          f"N = {n}, chunks of {chunk} samples ({n_chunks} chunks, "
          f"{chunk * 784 * 8 / 2**20:.0f} MiB of x each); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; memory: about {need / 2**30:.1f} GiB "
          f"needed" + (f", {avail / 2**30:.1f} GiB available" if avail else ""))

    # one chunk in this process: the per-chunk time of the projection
    rng = np.random.default_rng(0)
    xc = rng.standard_normal((chunk, 784))
    yc = rng.integers(0, 10, chunk)
    per_chunk = {}
    for name, fn in (("loss_and_grad", lambda: mod.loss_and_grad(params, xc, yc)),
                     ("hvp", lambda: mod.hvp(params, xc, yc, v))):
        fn()
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        per_chunk[name] = statistics.median(ts)
        print(f"one chunk in-process, {name}: {per_chunk[name] * 1e3:.1f} ms "
              f"(median of 5)")
    xc = yc = None          # freed before the clusters start
    reps = min(10, max(1, n_chunks // 2))        # the control's chunks per worker
    # each round: the control on both clusters, then each function on 1 worker
    # (every chunk) and on 2 (half each, were the cores free)
    per_round = (2 * reps * per_chunk["loss_and_grad"]
                 + 1.5 * n_chunks * (per_chunk["loss_and_grad"] + per_chunk["hvp"]))
    print(f"expected: at least {args.rounds * per_round / 60:.1f} min for {args.rounds} "
          f"rounds ({per_round:.0f} s each from the chunk times above, were the 2 workers "
          f"2x; Dask's scheduling and the reduction add 1.4x at chunks of 5,000), plus "
          f"the data's generation and the workers' start in every round")

    # one cluster alive at a time: each round starts the 1-worker and the
    # 2-worker cluster in turn (the order alternating by round), generates
    # and places the same data on it, times the control and both functions,
    # and closes it; the start-up is outside the timings
    config = {} if args.dask_defaults else bd.CLUSTER_CONFIG
    times = {(w, f): [] for w in (1, 2) for f in ("loss_and_grad", "hvp", "control")}
    cpu = {(w, f): [] for w in (1, 2) for f in ("loss_and_grad", "hvp")}
    peaks = {1: [0.0], 2: [0.0, 0.0]}
    results = {}
    me = psutil.Process()             # the client, the scheduler and the nannies
    print("clusters: " + ("Dask's default settings" if args.dask_defaults else
                          "bpgen.distributed.CLUSTER_CONFIG (" + ", ".join(
                              f"{k.split('.', 1)[1]}: {v}" for k, v in config.items()) + ")")
          + "; one cluster alive at a time")
    for r in range(args.rounds):
        for w in ((1, 2) if r % 2 == 0 else (2, 1)):
            with dask.config.set(config):
                cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1,
                                                   processes=True, dashboard_address=":0",
                                                   memory_limit=0)
            client = distributed.Client(cluster)
            try:
                rs = da.random.default_rng(0)
                x = rs.standard_normal((n, 784), chunks=(chunk, 784))
                y = rs.integers(0, 10, n, chunks=chunk)
                if args.placement == "runs":         # each worker one run of chunks
                    x, y, _ = bd.persist(x, y, client=client)
                else:                                # as Dask spreads them
                    x, y = client.persist([x, y])
                    distributed.wait([x, y])
                t = time.perf_counter()           # builds or imports the module
                threads = client.run(_module_threads, mod.ARCHITECTURE_HASH)
                first = time.perf_counter() - t
                addrs = sorted(client.nthreads())
                procs = [psutil.Process(client.run(os.getpid)[a]) for a in addrs]
                compute = [client.run(_executor_tid)[a] for a in addrs]
                if r < 2:
                    before = client.run(_rss_mib)
                    who = client.who_has(x)
                    held = [sum(1 for k in who if a in who[k]) for a in addrs]
                    print(f"round {r + 1}, {w} worker(s): x's chunks held per worker "
                          + ", ".join(map(str, held)) + "; resident memory per worker, data "
                          "persisted: " + ", ".join(f"{before[a]:.0f} MiB" for a in addrs)
                          + f"; module built or imported on each worker in {first:.2f} s; "
                          f"module threads per worker: "
                          + ", ".join(str(threads[a]) for a in addrs))
                t = time.perf_counter()         # the same work per worker: ideal ratio 1
                client.run(_busy, chunk, reps, mod.ARCHITECTURE_HASH)
                times[w, "control"].append((time.perf_counter() - t) / w)
                for f in ("loss_and_grad", "hvp"):
                    c0, p0 = _cpu(me), [_threads_cpu(q, tid) for q, tid in zip(procs, compute)]
                    t = time.perf_counter()
                    if f == "hvp":
                        res = bd.hvp(ARCH, params, x, y, v, client=client)
                    else:
                        res = bd.loss_and_grad(ARCH, params, x, y, client=client)
                    times[w, f].append(time.perf_counter() - t)
                    p1 = [_threads_cpu(q, tid) for q, tid in zip(procs, compute)]
                    cpu[w, f].append((_cpu(me) - c0, [(a1 - a0, b1 - b0) for (a0, b0), (a1, b1)
                                                      in zip(p0, p1)]))
                    results[w, f] = _flat(res)
                got = client.run(_peak_rss_mib)
                peaks[w] = [max(p, got[a]) for p, a in zip(peaks[w], addrs)]
                x = y = None
            finally:
                client.close()
                cluster.close()
    for f in ("loss_and_grad", "hvp"):
        t1, t2 = times[1, f], times[2, f]
        ratios = [a / b for a, b in zip(t1, t2)]
        same = results[1, f].tobytes() == results[2, f].tobytes()
        print(f"{f}: 1 worker {statistics.median(t1):.2f} s, 2 workers "
              f"{statistics.median(t2):.2f} s (medians of {args.rounds}); speed-up "
              f"{statistics.median(ratios):.2f}x (median of the rounds' ratios, "
              f"{min(ratios):.2f}-{max(ratios):.2f}); same bits: {same}")
        for w in (1, 2):
            main = statistics.median(c for c, _ in cpu[w, f])
            per = [tuple(statistics.median(ws[i][j] for _, ws in cpu[w, f]) for j in (0, 1))
                   for i in range(w)]
            print(f"  {w} worker(s), CPU per pass (medians): this process (client, scheduler, "
                  f"nannies) {main:.2f} s; worker process(es) "
                  + ", ".join(f"{a + b:.2f} s ({a:.2f} computing, {b:.2f} other threads)"
                              for a, b in per))
    t1, t2 = times[1, "control"], times[2, "control"]
    ratios = [a / b for a, b in zip(t1, t2)]
    print(f"control (no Dask): {reps} loss_and_grad of one chunk on every worker at "
          f"once, work per second of 2 workers over 1: {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}): the parallelism the machine gave")
    for w in (1, 2):
        held = n * 785 * 8 / w / 2**20
        print(f"{w} worker(s): peak resident memory per worker process "
              + ", ".join(f"{p:.0f} MiB" for p in peaks[w])
              + f" (holding {held:.0f} MiB of persisted data each; beyond it "
              + ", ".join(f"{p - held:.0f} MiB" for p in peaks[w]) + ")")
    print(f"reduction: {mod.N_PARAMS} float64 = {mod.N_PARAMS * 8 / 2**20:.2f} MiB per "
          f"partial sum")
    if args.single:
        rng = da.random.default_rng(0)
        x = rng.standard_normal((n, 784), chunks=(chunk, 784)).compute(scheduler="synchronous")
        y = rng.integers(0, 10, n, chunks=chunk).compute(scheduler="synchronous")
        t = time.perf_counter()
        lg = mod.loss_and_grad(params, x, y)
        print(f"single process, whole data at once, loss_and_grad: "
              f"{time.perf_counter() - t:.2f} s; relative difference from 2 workers "
              f"{np.linalg.norm(_flat(lg) - results[2, 'loss_and_grad']) / np.linalg.norm(_flat(lg)):.1e}")


if __name__ == "__main__":
    sys.exit(main())
