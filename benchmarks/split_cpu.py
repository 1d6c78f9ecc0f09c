"""CPU cost of a split call (runtime/split.c) against one thread, measured
in CPU time, which a loaded machine disturbs far less than wall time.

Usage, from the repository root::

    python benchmarks/split_cpu.py                         # mlp_mnist, N = 128 and 1,024
    python benchmarks/split_cpu.py --cases mlp_mnist --batch 128 --threads 2

For each case (benchmarks/run.py's CASES; first-order, float64 or float32)
the C module is built, then ``loss_and_grad`` is timed at 1 thread and at
``--threads`` (a split call), alternating, R rounds of a batch of calls
each.  Per call it reports:

- process CPU time (time.process_time) at 1 and n threads, and their ratio
  ("CPU x": the split's extra work over one thread's: thread starts, each
  slice's own products, the weighted sum of the slices' outputs);
- at n threads, the calling thread's CPU time (time.thread_time: Python's
  part, the input checks, slice 0, its part of the sum) and the other
  threads' (the process's minus the caller's): the larger is a lower bound
  of the call's critical path on idle cores;
- wall time at 1 and n threads, and the load average: on a loaded machine
  (load >= the core count) wall times are meaningless.

Medians over the rounds.  The module is built with the default split rule;
BPGEN_CACHE_DIR is honoured.
"""
from __future__ import annotations

import argparse
import os
import statistics as st
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bpgen  # noqa: E402

_argv, sys.argv = sys.argv, [sys.argv[0], "--threads", "all"]    # run.py: not pinned to one CPU
from run import CASES  # noqa: E402

sys.argv = _argv


def _data(mod, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *mod.INPUT_SHAPE)).astype(mod.DTYPE)
    y = rng.integers(0, mod.OUTPUT_UNITS, n)
    return mod.init_params(seed), x, y


def _timed(mod, threads, args, calls):
    mod.set_threads(threads)
    mod.loss_and_grad(*args)
    c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    for _ in range(calls):
        mod.loss_and_grad(*args)
    c, t, w = time.process_time() - c0, time.thread_time() - t0, time.perf_counter() - w0
    return {"cpu": c / calls * 1e6, "caller": t / calls * 1e6,
            "others": (c - t) / calls * 1e6, "wall": w / calls * 1e6}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="mlp_mnist")
    ap.add_argument("--batch", default="128,1024", help="batch sizes (comma-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=0.3, help="per batch of calls, about")
    opts = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} at the start; "
          f"{len(os.sched_getaffinity(0))} cores this process may use")
    for case in opts.cases.split(","):
        arch, _ = CASES[case]
        with tempfile.TemporaryDirectory() as out:
            mod = bpgen.build(arch, backend="c", out_dir=out)
            for n in (int(b) for b in opts.batch.split(",")):
                args = _data(mod, n)
                one = _timed(mod, 1, args, 3)["wall"]
                calls = max(3, int(opts.seconds / max(one, 1) * 1e6))
                rows = {1: [], opts.threads: []}
                split = mod._split_calls()
                loads = []
                for _ in range(opts.rounds):
                    loads.append(os.getloadavg()[0])
                    for k in rows:
                        rows[k].append(_timed(mod, k, args, calls))
                assert mod._split_calls() > split, "no call ran split"
                med = {k: {f: st.median(r[f] for r in v) for f in v[0]} for k, v in rows.items()}
                a, b = med[1], med[opts.threads]
                ratio = st.median(y["cpu"] / x["cpu"] for x, y in zip(rows[1], rows[opts.threads]))
                print(f"{case} N={n} ({calls} calls x {opts.rounds} rounds, load "
                      f"{min(loads):.1f}-{max(loads):.1f}): CPU us/call 1 thread {a['cpu']:.0f}, "
                      f"{opts.threads} threads {b['cpu']:.0f} (CPU x {ratio:.3f}: caller "
                      f"{b['caller']:.0f} + others {b['others']:.0f}); wall 1 thread "
                      f"{a['wall']:.0f}, {opts.threads} threads {b['wall']:.0f}")


if __name__ == "__main__":
    main()
