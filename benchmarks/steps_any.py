"""``steps: any`` against a fixed T: the cost of reading T at call time, on
run.py's ``lstm`` case (LSTM 32 -> 128, T = 50, N = 16, a dense output of 4
at every step, mse over all steps), one BLAS thread.

Usage, from the repository root::

    python benchmarks/steps_any.py [--pairs 31] [--calls 20] [--backend c|numpy]
                                   [--steps T] [--batch N]

(--steps, --batch: another T and N than the case's 50 and 16, e.g. a small
call, where the C module's Python path costs most.)

Method: as benchmarks/lengths.py.  One process, one BLAS thread; the same
architecture built twice, with ``steps: 50`` and with ``steps: any``, and
each function called on the same batch (T = 50) through both modules, in
alternating order, ``calls`` calls per timing; the ratio any / fixed is kept
only when the machine was quiet during the pair (the idle share of
/proc/stat's CPU time at least --idle; 0 keeps every pair).  Printed: the
median ratio per function and its quartiles, and the fixed module's time.
"""
import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "BPGEN_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lengths import _idle  # noqa: E402
from run import CASES  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=31)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--backend", default="c")
    ap.add_argument("--idle", type=float, default=0.4)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--out", default=None, help="build directory (default: a temporary one)")
    args = ap.parse_args(argv)
    import tempfile

    import bpgen
    arch, n = CASES["lstm"]
    if args.steps:
        arch = dict(arch, name=f"{arch['name']}_t{args.steps}",
                    input=dict(arch["input"], steps=args.steps))
    n = args.batch or n
    out = args.out or tempfile.mkdtemp(prefix="bpgen_steps_any_")
    fixed = bpgen.build(arch, backend=args.backend, out_dir=out)
    anyt = bpgen.build(dict(arch, name=CASES["lstm"][0]["name"] + "_any",
                            input=dict(arch["input"], steps="any")),
                       backend=args.backend, out_dir=out)
    t, f = arch["input"]["steps"], arch["input"]["features"]
    rng = np.random.default_rng(0)
    params = fixed.init_params(0)
    x = rng.standard_normal((n, t, f))
    y = rng.standard_normal((n, t, fixed.OUTPUT_UNITS))
    v = {k: rng.standard_normal(a.shape) for k, a in params.items()}
    assert fixed.loss_and_grad(params, x, y)[0] == anyt.loss_and_grad(params, x, y)[0]
    calls = {name: tuple((lambda m=m, fn=fn: fn(m)) for m in (fixed, anyt)) for name, fn in {
        "loss_and_grad": lambda m: m.loss_and_grad(params, x, y),
        "forward": lambda m: m.forward(params, x),
        "hvp": lambda m: m.hvp(params, x, y, v)}.items()}
    print(f"lstm 32->128, T={t}, N={n}: steps: any / steps: {t}; backend {args.backend}; "
          f"{args.calls} calls per timing")
    for name, (plain, other) in calls.items():
        for fn in (plain, other):
            for _ in range(5):
                fn()
        ratios, times, dropped = [], [], 0
        for i in range(args.pairs):
            i0, a0 = _idle()
            pair = {}
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                fn = (plain, other)[which]
                start = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                pair[which] = (time.perf_counter() - start) / args.calls
            i1, a1 = _idle()
            if (i1 - i0) / max(a1 - a0, 1) < args.idle:
                dropped += 1
                continue
            ratios.append(pair[1] / pair[0])
            times.append(pair[0])
        if not ratios:
            print(f"{name:14s} no quiet pair ({dropped} dropped)")
            continue
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"{name:14s} steps: any / fixed T: median {med:.3f} (quartiles {q1:.3f} "
              f"- {q3:.3f}) over {len(ratios)} quiet pairs ({dropped} dropped); "
              f"fixed: {np.median(times) * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()
