"""The exported C library's loss_and_grad (bpgen export, docs/c-export.md)
against the Python module's C function on the same data, one thread.

Usage, from the repository root::

    python benchmarks/export_speed.py [--cases mlp_tiny,lstm] [--cblas]

For each case of benchmarks/run.py (the default: the small networks, the
Elman and LSTM ones and the digits CNN) the script builds the C module
(its own build configuration: OpenBLAS, per-vector-width clones) and the
export, compiled with the module's optimisation flags (-O2 -fopenmp-simd
-fno-math-errno -fno-trapping-math -falign-functions=64 and
-D<prefix>_OPENMP_SIMD; with --cblas also -D<prefix>_USE_CBLAS against
the same OpenBLAS, scipy-openblas32; with --native -march=native, the
vector width the module's per-CPU copies of its functions run at).  It times the module's
``loss_and_grad`` from Python (its C entry point, 1.5 us of call overhead
included) and the export's ``<prefix>_loss_and_grad`` in a C loop
(benchmarks/export_bench.c): the median and the minimum of 15 batches of
calls of ~0.1 s, in microseconds per call, and the ratios (export /
module) of the medians and of the minima (the minimum is the steadier on
a shared machine).  Both processes are pinned to the same CPU and run
with one BLAS thread.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("BPGEN_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DEFAULT = "mlp_tiny,mlp_small,elman_small,lstm,lstm_f32,cnn_digits"
FLAGS = ["-O2", "-std=c99", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
         "-falign-functions=64"]


REPEATS = 15


def _time(fn, repeats=REPEATS):
    start, calls, fastest = time.perf_counter(), 0, float("inf")
    while calls < 3 or time.perf_counter() - start < 0.2:
        t0 = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t0)
        calls += 1
    number = max(1, round(0.1 / fastest))
    times = timeit.Timer(fn).repeat(repeats, number)
    return statistics.median(times) / number, min(times) / number


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=DEFAULT)
    ap.add_argument("--cblas", action="store_true",
                    help="also the export with -D<prefix>_USE_CBLAS (scipy-openblas32)")
    ap.add_argument("--native", action="store_true",
                    help="compile the export with -march=native (the module's functions run "
                         "their copy for this CPU's vector width: target_clones)")
    args = ap.parse_args(argv)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    import bpgen
    from bpgen.c_export import export
    from run import CASES
    cc = shutil.which("gcc") or shutil.which("cc")
    print("| case | N | module C (us) | export (us) | export / module |"
          + (" export+CBLAS (us) | ratio |" if args.cblas else "")
          + "  (each: median, minimum)")
    print("| --- | --- | --- | --- | --- |" + (" --- | --- |" if args.cblas else ""))
    for name in args.cases.split(","):
        arch, n = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            mod = bpgen.build(arch, backend="c", out_dir=os.path.join(tmp, "m"))
            rng = np.random.default_rng(0)
            params = mod.init_params(seed=0)
            shape = (n,) + tuple(mod.INPUT_SHAPE)
            x = rng.standard_normal(shape).astype(mod.DTYPE)
            lead = (n, mod.STEPS) if mod.LOSS_ALL_STEPS else (n,)
            if mod.TARGET_KIND == "labels":
                y = rng.integers(0, mod.OUTPUT_UNITS, lead)
            else:
                y = rng.standard_normal(lead + (mod.OUTPUT_UNITS,)).astype(mod.DTYPE)
            t_mod, m_mod = _time(lambda: mod.loss_and_grad(params, x, y))
            loss = mod.loss(params, x, y)
            out = os.path.join(tmp, "e")
            prefix = f"b_{name}"
            export(arch, out, prefix=prefix, functions="loss_and_grad")
            mod.flatten(params).tofile(os.path.join(tmp, "p.bin"))
            x.tofile(os.path.join(tmp, "x.bin"))
            np.asarray(y, dtype=np.int32 if mod.TARGET_KIND == "labels" else mod.DTYPE).tofile(
                os.path.join(tmp, "y.bin"))
            times = []
            variants = [[]]
            if args.cblas:
                import scipy_openblas32 as ob
                gemm = "scipy_cblas_sgemm" if mod.DTYPE == np.float32 else "scipy_cblas_dgemm"
                variants.append([f"-D{prefix}_USE_CBLAS", f"-D{prefix}_CBLAS_GEMM={gemm}",
                                 f"-isystem{ob.get_include_dir()}", f"-L{ob.get_lib_dir()}",
                                 f"-Wl,-rpath,{ob.get_lib_dir()}", f"-l{ob.get_library()}"])
            for extra in variants:
                exe = os.path.join(tmp, "bench")
                native = ["-march=native"] if args.native else []
                subprocess.run([cc, *FLAGS, *native, f"-D{prefix}_OPENMP_SIMD", f"-DPREFIX={prefix}",
                                f'-DHEADER="{prefix}.h"', f"-I{out}",
                                os.path.join(HERE, "export_bench.c"),
                                os.path.join(out, f"{prefix}.c"), "-o", exe, *extra, "-lm"],
                               check=True)
                calls = max(1, round(0.1 / t_mod))
                res = subprocess.run([exe, str(n), *(os.path.join(tmp, f) for f in
                                                     ("p.bin", "x.bin", "y.bin")), "-",
                                      str(calls), str(REPEATS)], capture_output=True,
                                     text=True, check=True).stdout.split()
                loss_exp = float(res[2])
                if abs(loss_exp - loss) > 1e-6 * abs(loss):
                    print(f"{name}: the export's loss {loss_exp} differs from the module's {loss}")
                times.append((float(res[0]) * 1e-6, float(res[1]) * 1e-6))

            def cell(t):
                return f"{t[0] * 1e6:,.1f}, {t[1] * 1e6:,.1f}"

            def ratio(t):
                return f"{t[0] / t_mod:.2f}, {t[1] / m_mod:.2f}"
            row = (f"| {name} | {n} | {cell((t_mod, m_mod))} | {cell(times[0])} | "
                   f"{ratio(times[0])} |")
            if args.cblas:
                row += f" {cell(times[1])} | {ratio(times[1])} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
