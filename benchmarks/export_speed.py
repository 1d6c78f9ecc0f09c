"""The exported C library's loss_and_grad (bpgen export, docs/c-export.md)
against the Python module's C function on the same data, one thread.

Usage, from the repository root::

    python benchmarks/export_speed.py [--cases mlp_tiny,lstm] [--cblas] [--native]
                                      [--rounds 9] [--prelude OLD_PRELUDE.c]

For each case of benchmarks/run.py (the default: the small networks, the
Elman and LSTM ones and the digits CNN) the script builds the C module
(its own build configuration: OpenBLAS, per-vector-width clones) and the
export, compiled with the module's optimisation flags (-O2 -fopenmp-simd
-fno-math-errno -fno-trapping-math -falign-functions=64 and
-D<prefix>_OPENMP_SIMD; with --native also -march=native, the vector width
the module's per-CPU copies of its functions run at).  Variants of the
export: its own kernels; with --cblas also -D<prefix>_USE_CBLAS against the
module's OpenBLAS (scipy-openblas32); with --prelude PATH its own kernels
from another version of bpgen/c_export/runtime/prelude.c (an A/B of two
kernels: e.g. ``git show HEAD~1:bpgen/c_export/runtime/prelude.c``).

Timing: interleaved rounds; in each, ~0.05 s of calls of the module's
``loss_and_grad`` from Python (its C entry point, ~1.5 us of call overhead
included) and then the same number of calls of each variant's
``<prefix>_loss_and_grad`` in a C loop (benchmarks/export_bench.c, a
process kept running between rounds), each measured in the calling
thread's CPU time (one thread, one BLAS thread, every process pinned to
the same CPU).  Prints per case: the module's and each variant's median
microseconds per call, and the median over rounds of the ratio variant /
module of the same round (with its smallest and largest), so that load
changing between rounds cancels.
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

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("BPGEN_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DEFAULT = "mlp_tiny,mlp_small,elman_small,lstm,lstm_f32,cnn_digits"
FLAGS = ["-O2", "-std=c99", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
         "-falign-functions=64"]
PRELUDE = os.path.join(os.path.dirname(HERE), "bpgen", "c_export", "runtime", "prelude.c")


def _module_time(fn, calls):
    """CPU time of this thread per call of fn, in seconds."""
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=DEFAULT)
    ap.add_argument("--cblas", action="store_true",
                    help="also the export with -D<prefix>_USE_CBLAS (scipy-openblas32)")
    ap.add_argument("--native", action="store_true",
                    help="compile the export with -march=native (the module's functions run "
                         "their copy for this CPU's vector width: target_clones)")
    ap.add_argument("--prelude", default=None,
                    help="also the export's own kernels from this prelude.c (an A/B)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    import bpgen
    from bpgen.c_export import export
    from run import CASES
    cc = shutil.which("gcc") or shutil.which("cc")
    names = ["own"] + (["alt"] if args.prelude else []) + (["cblas"] if args.cblas else [])
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, "
          f"{'-march=native' if args.native else 'baseline ISA'}, {args.rounds} rounds, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print("| case | N | module (us) | " + " | ".join(
        f"{v} (us) | {v} / module" for v in names) + " |")
    print("| --- | --- | --- |" + " --- | --- |" * len(names))
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
            loss = mod.loss(params, x, y)
            out = os.path.join(tmp, "e")
            prefix = f"b_{name}"
            export(arch, out, prefix=prefix, functions="loss_and_grad")
            mod.flatten(params).tofile(os.path.join(tmp, "p.bin"))
            x.tofile(os.path.join(tmp, "x.bin"))
            np.asarray(y, dtype=np.int32 if mod.TARGET_KIND == "labels" else mod.DTYPE).tofile(
                os.path.join(tmp, "y.bin"))
            source = os.path.join(out, f"{prefix}.c")
            variants = {"own": (source, [])}
            if args.prelude:
                with open(PRELUDE) as f:
                    new = f.read()
                with open(args.prelude) as f:
                    old = f.read()
                with open(source) as f:
                    text = f.read()
                assert new in text, "the export does not embed this prelude.c"
                alt = os.path.join(out, f"{prefix}_alt.c")
                with open(alt, "w") as f:
                    f.write(text.replace(new, old))
                variants["alt"] = (alt, [])
            if args.cblas:
                import scipy_openblas32 as ob
                gemm = "scipy_cblas_sgemm" if mod.DTYPE == np.float32 else "scipy_cblas_dgemm"
                variants["cblas"] = (source, [
                    f"-D{prefix}_USE_CBLAS", f"-D{prefix}_CBLAS_GEMM={gemm}",
                    f"-isystem{ob.get_include_dir()}", f"-L{ob.get_lib_dir()}",
                    f"-Wl,-rpath,{ob.get_lib_dir()}", f"-l{ob.get_library()}"])
            procs = {}
            for v, (src, extra) in variants.items():
                exe = os.path.join(tmp, f"bench_{v}")
                native = ["-march=native"] if args.native else []
                subprocess.run([cc, *FLAGS, *native, f"-D{prefix}_OPENMP_SIMD",
                                f"-DPREFIX={prefix}", f'-DHEADER="{prefix}.h"', f"-I{out}",
                                os.path.join(HERE, "export_bench.c"), src, "-o", exe, *extra,
                                "-lm"], check=True)
                procs[v] = subprocess.Popen(
                    [exe, str(n), *(os.path.join(tmp, f) for f in ("p.bin", "x.bin", "y.bin")),
                     "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

            def fn():
                return mod.loss_and_grad(params, x, y)
            fn()
            calls = max(1, round(0.05 / max(_module_time(fn, 3), 1e-7)))
            t_mod, t_var = [], {v: [] for v in variants}
            for _ in range(args.rounds):
                t_mod.append(_module_time(fn, calls))
                for v, p in procs.items():
                    p.stdin.write(f"{calls}\n")
                    p.stdin.flush()
                    us, loss_exp = p.stdout.readline().split()
                    if abs(float(loss_exp) - loss) > 1e-6 * abs(loss):
                        print(f"{name} ({v}): the export's loss {loss_exp} differs from the "
                              f"module's {loss}")
                    t_var[v].append(float(us) * 1e-6)
            for p in procs.values():
                p.stdin.close()
                p.wait()
            row = f"| {name} | {n} | {statistics.median(t_mod) * 1e6:,.1f} |"
            for v in variants:
                ratios = [a / b for a, b in zip(t_var[v], t_mod)]
                row += (f" {statistics.median(t_var[v]) * 1e6:,.1f} | "
                        f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
            print(row, flush=True)
    print(f"# load average at the end {open('/proc/loadavg').read().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
