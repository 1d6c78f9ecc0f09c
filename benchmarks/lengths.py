"""A padded batch with ``lengths`` against the same batch without: the cost of
masking, on run.py's ``lstm`` case (LSTM 32 -> 128, T = 50, N = 16, a dense
output of 4 at every step, mse over all steps), bpgen C, one thread.

Usage, from the repository root::

    python benchmarks/lengths.py [--pairs 41] [--calls 20] [--backend c]

Method: one process, one BLAS thread.  The lengths are drawn uniformly in
[T/2, T] (seed 0).  Each pair times ``calls`` calls of the call without
lengths (the fixed-T module's own path: C entry point) and ``calls`` calls
of the same function with lengths (the ``*_masked`` generated function,
reached through the Python path), in alternating order; the ratio of the
two is kept only when the machine was quiet during the pair (the idle share
of /proc/stat's CPU time at least --idle, default 0.4 of the machine:
another process running on the other core leaves about 0.5).  Printed: the
median ratio per function and its spread (quartiles).
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
from run import CASES  # noqa: E402


def _idle():
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=41)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--backend", default="c")
    ap.add_argument("--idle", type=float, default=0.4)
    ap.add_argument("--out", default=None, help="build directory (default: a temporary one)")
    args = ap.parse_args(argv)
    import tempfile

    import bpgen
    arch, n = CASES["lstm"]
    out = args.out or tempfile.mkdtemp(prefix="bpgen_lengths_")
    mod = bpgen.build(arch, backend=args.backend, out_dir=out)
    t, f = arch["input"]["steps"], arch["input"]["features"]
    rng = np.random.default_rng(0)
    params = mod.init_params(0)
    x = rng.standard_normal((n, t, f))
    y = rng.standard_normal((n, t, mod.OUTPUT_UNITS))
    v = {k: rng.standard_normal(a.shape) for k, a in params.items()}
    lengths = rng.integers(t // 2, t + 1, n)
    calls = {
        "loss_and_grad": (lambda: mod.loss_and_grad(params, x, y),
                          lambda: mod.loss_and_grad(params, x, y, lengths=lengths)),
        "forward": (lambda: mod.forward(params, x),
                    lambda: mod.forward(params, x, lengths=lengths)),
        "hvp": (lambda: mod.hvp(params, x, y, v),
                lambda: mod.hvp(params, x, y, v, lengths=lengths)),
    }
    print(f"lstm 32->128, T={t}, N={n}, lengths uniform in [{t // 2}, {t}]: "
          f"{lengths.tolist()}; backend {args.backend}; {args.calls} calls per timing")
    for name, (plain, masked) in calls.items():
        for fn in (plain, masked):
            for _ in range(5):
                fn()
        ratios, times, dropped = [], [], 0
        for i in range(args.pairs):
            i0, a0 = _idle()
            pair = {}
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                fn = (plain, masked)[which]
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
        print(f"{name:14s} with lengths / without: median {med:.3f} (quartiles {q1:.3f} "
              f"- {q3:.3f}) over {len(ratios)} quiet pairs ({dropped} dropped); "
              f"without: {np.median(times) * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()
