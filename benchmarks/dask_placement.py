"""bpgen.distributed: a pass over placed data against one over data Dask spread.

One LocalCluster of 2 worker processes (1 thread each) holds the same
values twice: placed by ``bpgen.distributed.persist`` (each worker one run
of consecutive chunks: whole subtrees of the reduction as single tasks) and
spread by ``client.persist`` (chunks where Dask computed them, mostly
alternating: about a task per chunk and per addition).  Passes of one
function alternate placed, spread, placed, ...; for each it prints the
tasks (from the task stream), the CPU time of this process (the client,
the scheduler and the nannies: a LocalCluster runs them here) beyond its
idle rate (measured over 5 s before the passes), the CPU time of both
worker processes, and whether the two results are the same bits.  CPU
times, not wall times, so it means something on a shared machine too
(docs/distributed.md, "Placed data").

Usage, from the repository root::

    python benchmarks/dask_placement.py [--samples 200000] [--chunk 2000] [--pairs 3] [--function loss_and_grad|hvp]
"""
import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bpgen.distributed as bd
from dask_scaling import ARCH, _cpu


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=2_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--function", choices=("loss_and_grad", "hvp"), default="loss_and_grad")
    args = ap.parse_args(argv)
    for key in ("samples", "chunk", "pairs"):
        if getattr(args, key) < 1:
            ap.error(f"--{key}: expected a positive integer, got {getattr(args, key)}")
    need = 2 * args.samples * 785 * 8
    print(f"784-256-256-10 MLP, float64, C backend; N = {args.samples} in chunks of "
          f"{args.chunk}; the data twice: {need / 2**30:.1f} GiB; load average "
          f"{os.getloadavg()[0]:.1f}")
    import dask.array as da
    import distributed
    import psutil
    mod = bd.module(ARCH)
    params = mod.init_params(0)
    v = mod.unflatten(np.random.default_rng(1).standard_normal(mod.N_PARAMS))
    me = psutil.Process()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=0) as cluster, \
            distributed.Client(cluster) as c:
        rng = da.random.default_rng(0)
        x = rng.standard_normal((args.samples, 784), chunks=(args.chunk, 784))
        y = rng.integers(0, 10, args.samples, chunks=args.chunk)
        spread = c.persist([x, y])
        distributed.wait(spread)
        placed = bd.persist(x * 1.0, y + 0, client=c)[:2]     # other keys, same values
        addrs = sorted(c.nthreads())
        for name, d in (("placed", placed), ("spread", spread)):
            keys = [b.key for b in d[0].to_delayed().ravel()]
            who = c.sync(c.scheduler.who_has, keys=keys)
            print(f"{name}: x's chunks by worker "
                  + "".join(str(addrs.index(who[k][0])) for k in keys))
        workers = [psutil.Process(p) for p in c.run(os.getpid).values()]

        def run(d):
            if args.function == "hvp":
                return bd.hvp(ARCH, params, *d, v, client=c)
            return bd.loss_and_grad(ARCH, params, *d, client=c)[1]
        run(placed)                            # the module built or imported on each worker
        run(spread)
        t0 = _cpu(me)
        time.sleep(5)
        idle = (_cpu(me) - t0) / 5
        print(f"this process idle: {idle * 100:.1f}% of a core")
        rec, bits = collections.defaultdict(list), {}
        for _ in range(args.pairs):
            for name, d in (("placed", placed), ("spread", spread)):
                m0, w0 = _cpu(me), sum(_cpu(p) for p in workers)
                t = time.perf_counter()
                with distributed.get_task_stream(c) as ts:
                    r = run(d)
                wall = time.perf_counter() - t
                rec[name].append((_cpu(me) - m0 - idle * wall,
                                  sum(_cpu(p) for p in workers) - w0, len(ts.data)))
                bits[name] = np.concatenate([np.ravel(a) for a in r.values()]).tobytes()
        for name, rs in rec.items():
            print(f"{args.function} {name}: tasks per pass {rs[0][2]}; this process CPU beyond "
                  f"idle " + ", ".join(f"{r[0]:.2f}" for r in rs) + " s; workers CPU "
                  + ", ".join(f"{r[1]:.2f}" for r in rs) + " s")
        ratios = [a[1] / b[1] for a, b in zip(rec["spread"], rec["placed"])]
        print("workers CPU, spread over placed, pair by pair: "
              + ", ".join(f"{q:.3f}" for q in ratios)
              + f"; same bits: {bits['placed'] == bits['spread']}; load average "
              f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
