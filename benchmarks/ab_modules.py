"""Two builds of one benchmark case's C module, timed interleaved in one
process: A, B, A, B ... (each pair in alternating order), thread CPU time
(time.thread_time) of ``calls`` calls each, pinned to one CPU and one
thread; prints the medians and the median of the pair ratios B/A, the
largest difference of their results, and the load average.  For a before
and after on a machine other jobs share, where wall time means little.

    python benchmarks/ab_modules.py lenet DIR_A DIR_B [--pairs 21] [--calls 5] [--what hvp|hessian]
    python benchmarks/ab_modules.py ps_cnn_digits DIR_A DIR_B --what clipped_grad

DIR_A and DIR_B hold ``<name>_c.py`` and its extension, e.g. built by
``python -m bpgen build ARCH --backend c --out DIR`` from two checkouts,
or by ``--build DIR`` here (this checkout's bpgen, the case's architecture).
The cases are run.py's and per_sample.py's (ps_cnn_digits ...); ``--what``
per_sample_grad_norms or clipped_grad (max_norm: the median per-sample
norm, half the samples clipped, as per_sample.py) times those instead."""
import argparse
import importlib.util
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402  (its cases; pins this process to one CPU, one thread, before NumPy)
import numpy as np  # noqa: E402

from bpgen.check import sample_point  # noqa: E402
from bpgen.spec import load_spec  # noqa: E402


def load(directory: str, name: str, alias: str):
    spec = importlib.util.spec_from_file_location(alias, os.path.join(directory, f"{name}_c.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if hasattr(mod, "set_threads"):
        mod.set_threads(1)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from per_sample import _cases
    cases = {**run.CASES, **run.SECOND_ORDER, **_cases()}
    ap.add_argument("case", choices=sorted(cases))
    ap.add_argument("dirs", nargs="*", help="DIR_A DIR_B")
    ap.add_argument("--build", metavar="DIR", help="only build the case's C module into DIR")
    ap.add_argument("--pairs", type=int, default=21)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--what", choices=("loss_and_grad", "hvp", "hessian", "per_sample_grad_norms",
                                       "clipped_grad"), default="loss_and_grad")
    args = ap.parse_args()
    arch, n = cases[args.case][:2]
    if args.build:
        import bpgen
        bpgen.build(arch, backend="c", out_dir=args.build)
        return
    if len(args.dirs) != 2:
        ap.error("expected DIR_A DIR_B")
    a, b = (load(d, arch["name"], f"ab_{i}") for i, d in enumerate(args.dirs))
    params, x, y = sample_point(load_spec(arch), a, batch=n, seed=0)
    v = a.init_params(seed=1)
    max_norm = (float(np.median(a.per_sample_grad_norms(params, x, y)))
                if args.what == "clipped_grad" else None)
    call = {"loss_and_grad": lambda m: m.loss_and_grad(params, x, y),
            "hvp": lambda m: m.hvp(params, x, y, v),
            "hessian": lambda m: m.hessian(params, x, y),
            "per_sample_grad_norms": lambda m: {"norms": m.per_sample_grad_norms(params, x, y)},
            "clipped_grad": lambda m: m.clipped_grad(params, x, y, max_norm)}[args.what]
    ra, rb = call(a), call(b)
    if args.what == "clipped_grad":
        ra, rb = ({**r[1], "norms": r[2]} for r in (ra, rb))
    elif args.what == "loss_and_grad":
        print(f"loss: relative difference {abs(ra[0] - rb[0]) / abs(ra[0]):.1e}")
        ra, rb = ra[1], rb[1]
    if args.what == "hessian":
        ra, rb = {"H": ra}, {"H": rb}
    worst = max(np.abs(ra[k] - rb[k]).max() / np.abs(ra[k]).max() for k in ra)
    print(f"{args.what}: largest difference relative to the largest entry, per key: {worst:.1e}")

    def timed(m):
        t0 = time.thread_time()
        for _ in range(args.calls):
            call(m)
        return (time.thread_time() - t0) / args.calls * 1e6

    for _ in range(3):
        timed(a), timed(b)
    ta, tb = [], []
    for i in range(args.pairs):
        if i % 2 == 0:
            ta.append(timed(a))
            tb.append(timed(b))
        else:
            tb.append(timed(b))
            ta.append(timed(a))
    ratios = [q / p for p, q in zip(ta, tb)]
    print(f"{args.case} {args.what}, N = {n}: A {statistics.median(ta):.0f} us, "
          f"B {statistics.median(tb):.0f} us, B/A median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; {args.pairs} pairs of {args.calls} calls, "
          f"thread CPU time); load average {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
