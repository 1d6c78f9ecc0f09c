"""The exported library's own product kernel (bpgen/c_export/runtime/
prelude.c: bpg_own_gemm) against OpenBLAS (scipy-openblas32, one thread) at
the shapes of the benchmark networks' products, in GFLOP/s.

Usage, from the repository root::

    python benchmarks/export_kernel.py [--native | --march ARCH] [--float32] [-D NAME=VALUE ...]

Compiles benchmarks/export_kernel.c after the prelude with the flags of
benchmarks/export_speed.py (its baseline x86-64, -march=native, or
-march=ARCH, e.g. x86-64-v3 for AVX2), and prints the kernel's tile (rows x
elements, which follows the vector width the compiler targets; -D BPG_MR=8
-D BPG_NR=16 forces one) and, for each product (M x Nc by inner K; A·B, Aᵀ·B
or A·Bᵀ), the best of 15 batches: µs per product and GFLOP/s, of the kernel
and of OpenBLAS.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from export_speed import FLAGS  # noqa: E402

PRELUDE = os.path.join(os.path.dirname(HERE), "bpgen", "c_export", "runtime", "prelude.c")
#: (what, M, Nc, K, ta, tb): the products of the LSTM 32→128 (N = 16, T = 50)
#: loss_and_grad (each step's two, and the input's and the weights' over all
#: 800 rows of the sequence at once; logged from the export) and those of the
#: MLP 64-128-128-10 (N = 32) hidden layer
SHAPES = [
    ("LSTM h·Wh", 16, 512, 128, 0, 0),
    ("LSTM dG·Whᵀ", 16, 128, 512, 0, 0),
    ("LSTM Hᵀ·dG", 128, 512, 800, 1, 0),
    ("LSTM X·Wx", 800, 512, 32, 0, 0),
    ("LSTM Xᵀ·dG", 32, 512, 800, 1, 0),
    ("MLP h·W", 32, 128, 128, 0, 0),
    ("MLP dZ·Wᵀ", 32, 128, 128, 0, 1),
    ("MLP hᵀ·dZ", 128, 128, 32, 1, 0),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--march", default=None, help="compile with -march=ARCH")
    ap.add_argument("--float32", action="store_true")
    ap.add_argument("-D", dest="defines", action="append", default=[],
                    help="a macro for the prelude, e.g. BPG_MR=8")
    args = ap.parse_args(argv)
    import scipy_openblas32 as ob
    cc = shutil.which("gcc") or shutil.which("cc")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    gemm = "scipy_cblas_sgemm" if args.float32 else "scipy_cblas_dgemm"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.c")
        with open(src, "w") as f, open(PRELUDE) as a, open(os.path.join(HERE, "export_kernel.c")) as b:
            f.write("#define _POSIX_C_SOURCE 200809L\n" + a.read() + "\n" + b.read())
        exe = os.path.join(tmp, "k")
        march = "native" if args.native else args.march
        subprocess.run([cc, *FLAGS, *([f"-march={march}"] if march else []), "-DBPG_PRODUCTS",
                        *(f"-D{d}" for d in args.defines),
                        "-DBPG_OPENMP_SIMD", *(["-DBPG_FLOAT32"] if args.float32 else []),
                        "-DWITH_CBLAS", f"-DGEMM={gemm}", f"-isystem{ob.get_include_dir()}",
                        src, "-o", exe, f"-L{ob.get_lib_dir()}", f"-Wl,-rpath,{ob.get_lib_dir()}",
                        f"-l{ob.get_library()}", "-lm"], check=True)
        tile = subprocess.run([exe], capture_output=True, text=True).stdout.split()
        print(f"tile {tile[1]} x {tile[2]}, panel {tile[3]} rows")
        print("| product | M×Nc×K | own kernel µs | GFLOP/s | OpenBLAS µs | GFLOP/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for what, m, nc, k, ta, tb in SHAPES:
            out = subprocess.run([exe, str(m), str(nc), str(k), str(ta), str(tb)],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"| {what} | {m}×{nc}×{k} | {out[1]} | {out[2]} | {out[4]} | {out[5]} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
