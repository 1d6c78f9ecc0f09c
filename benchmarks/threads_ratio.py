"""A C module's loss_and_grad at 1 thread against 2 (or more) threads, in
one process, interleaved: issue 23's "2 threads vs 1" measured without the
drift between two separate benchmark runs.

    python benchmarks/threads_ratio.py mlp_mnist_1024 [--threads 2] [--pairs 15] [--calls 5]

Builds the case of ``benchmarks/run.py`` into a temporary directory (the
compile cache as usual), then alternates ``set_threads(1)`` and
``set_threads(n)``: each pair times ``--calls`` calls at each count (wall
time, medians), and prints the medians, the median of the pairs' ratios
with their range, and the load average. Not pinned: the process may use
every core it is allowed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

N_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BPGEN_NUM_THREADS")


def _cases():
    """run.py's CASES, read without its pinning (it pins on import)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    argv, sys.argv = sys.argv, [path]
    try:
        g = {"__name__": "run_cases", "__file__": path}
        exec(compile(open(path, encoding="utf-8").read(), path, "exec"), g)
    finally:
        sys.argv = argv
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    return g["CASES"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    if args.threads < 2:
        sys.exit("threads_ratio.py: --threads: expected at least 2")
    for var in N_THREADS:            # no cap from the environment
        os.environ[var] = str(args.threads)
    cases = _cases()
    if args.case not in cases:
        sys.exit(f"threads_ratio.py: case: expected one of {', '.join(sorted(cases))}")
    import bpgen
    from bpgen.check import sample_point
    from bpgen.spec import load_spec
    arch, n = cases[args.case][:2]
    with tempfile.TemporaryDirectory() as out:
        mod = bpgen.build(arch, backend="c", out_dir=out)
        params, x, y = sample_point(load_spec(arch), mod, batch=n, seed=0)

        def timed(threads):
            mod.set_threads(threads)
            mod.loss_and_grad(params, x, y)
            ts = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                mod.loss_and_grad(params, x, y)
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        one, many, ratios = [], [], []
        for _ in range(args.pairs):
            a, b = timed(1), timed(args.threads)
            one.append(a)
            many.append(b)
            ratios.append(a / b)
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    print(f"{args.case}, N = {n}: 1 thread {statistics.median(one) * 1e6:,.0f} us, "
          f"{args.threads} threads {statistics.median(many) * 1e6:,.0f} us; "
          f"speed-up {statistics.median(ratios):.3f}x (pairs {min(ratios):.3f}-{max(ratios):.3f}); "
          f"load average {load}")


if __name__ == "__main__":
    main()
