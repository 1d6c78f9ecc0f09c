"""Per-sample gradient norms of one weight, Gram form against the formed
gradient (issue 19, docs/performance.md "Per-sample gradients"): the time of
each form in bpgen's runtime (benchmarks the module's own functions use,
``_gram_squares`` / ``_explicit_squares`` of a generated module) over the rows
per sample r, for a weight U (r, a)ᵀ·V (r, d) per sample, N samples, time-major
rows like a recurrent weight's.  Prints the measured crossover (the smallest r
where the formed gradient is faster) beside the generator's rule, Gram while
r(a + d) < a·d, i.e. r < a·d / (a + d).

Usage, from the repository root::

    python benchmarks/gram_crossover.py [--n 16] [--shapes 32x512,128x512,64x64]
"""
import argparse
import os
import sys
import timeit

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "BPGEN_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--shapes", default="32x512,128x512,64x64,784x256")
    ap.add_argument("--rows", default="1,2,4,8,16,32,64,128,256")
    args = ap.parse_args(argv)
    import tempfile

    import bpgen
    # any module will do: its runtime functions are the ones timed
    arch = {"name": "crossover", "input": {"features": 2},
            "layers": [{"type": "dense", "units": 2}], "loss": "mse"}
    mod = bpgen.build(arch, "numpy", out_dir=tempfile.mkdtemp(prefix="bpgen_cross_"))
    rng = np.random.default_rng(0)
    n = args.n
    print(f"N = {n}, one thread; ms per call of the norm of one weight's per-sample "
          f"gradients")
    for shape in args.shapes.split(","):
        a, d = map(int, shape.split("x"))
        rule = a * d / (a + d)
        cross = None
        print(f"\nU (r, {a}), V (r, {d}): the generator picks Gram while r < {rule:.1f}")
        print(f"{'r':>5} {'Gram ms':>9} {'formed ms':>10} {'Gram/formed':>12}")
        for r in map(int, args.rows.split(",")):
            outs = [None, rng.standard_normal((r * n, a)), rng.standard_normal((r * n, d))]
            entry = ("gram", (a, d), (("product", 1, 2, r, "time", 0),))
            gram = min(timeit.repeat(lambda: mod._gram_squares(entry, outs, None, n, {}),
                                     number=3, repeat=5)) / 3
            formed = min(timeit.repeat(lambda: mod._explicit_squares(entry, outs, None, n, {}),
                                       number=3, repeat=5)) / 3
            if cross is None and formed < gram:
                cross = r
            print(f"{r:>5} {gram * 1e3:>9.3f} {formed * 1e3:>10.3f} {gram / formed:>12.2f}")
        print(f"measured crossover: formed faster from r = {cross}" if cross else
              "measured: Gram faster at every r tried")


if __name__ == "__main__":
    main()
