"""The matrix products of the `transformer` case's `loss_and_grad`
(benchmarks/run.py: F = 64, h = 4, T = 32, N = 16, so T·N = 512 rows), timed
one by one with the BLAS the C module links (scipy-openblas32, one thread):
what the products cost at the GEMM rate of their own shapes, and what Q, K
and V as one product X·[Wq Wk Wv] (and its two adjoints as one product each)
would save over the three products the attention layer now makes.

Usage, from the repository root::

    python benchmarks/transformer_products.py [--rounds 9]

Each row is the median over the rounds of the thread CPU time of a batch of
calls (rounds interleaved, so every row sees the same load); the 1024³
product gives the machine's GEMM rate in the same minute.  The (sample,
head) blocks of `seqmm` (32×32 by 16 for qk, 32×16 by 32 for av and atv)
are timed as the module calls them: one strided BLAS call per block, rows
N·F = 1,024 (or N·T = 512) apart, 64 blocks per `seqmm`.  The time of the
ctypes call itself (a product of size 0 through the same function, timed
the same way) is taken off those rows: it is a large part of a 1-3 µs
call, and the module's C does not pay it.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import scipy_openblas32 as ob  # noqa: E402

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
ROWS, F, T, H, N = 512, 64, 32, 4, 16
D = F // H

#: name -> (times it occurs per loss_and_grad, op(A) transposed, op(B)
#: transposed, M, Nc, K, beta, lda, ldb, ldc); lda etc. None: contiguous
PRODUCTS = {
    "1024³ (the machine's GEMM rate)": (0, 0, 0, 1024, 1024, 1024, 0.0, None, None, None),
    # forward: X·W (+ bias, β = 1: accumulate.py)
    "X·Wq, X·Wk, X·Wv (512×64 by 64)": (3, 0, 0, ROWS, F, F, 1.0, None, None, None),
    "X·[Wq Wk Wv] (512×192 by 64)": (0, 0, 0, ROWS, 3 * F, F, 1.0, None, None, None),
    "O·Wo, head X·W (512×64 by 64)": (2, 0, 0, ROWS, F, F, 1.0, None, None, None),
    "X·W1 (512×256 by 64)": (1, 0, 0, ROWS, 4 * F, F, 1.0, None, None, None),
    "A·W2 (512×64 by 256)": (1, 0, 0, ROWS, F, 4 * F, 1.0, None, None, None),
    # backward: δX = δZ·Wᵀ, δW = Xᵀ·δZ
    "δQ·Wqᵀ + δK·Wkᵀ + δV·Wvᵀ (3 × 512×64 by 64)": (3, 0, 1, ROWS, F, F, 1.0, None, None, None),
    "[δQ δK δV]·[Wq Wk Wv]ᵀ (512×64 by 192)": (0, 0, 1, ROWS, F, 3 * F, 1.0, None, None, None),
    "δZ·Wᵀ of Wo and the head (512×64 by 64)": (2, 0, 1, ROWS, F, F, 0.0, None, None, None),
    "δZ·W2ᵀ (512×256 by 64)": (1, 0, 1, ROWS, 4 * F, F, 0.0, None, None, None),
    "δZ·W1ᵀ (512×64 by 256)": (1, 0, 1, ROWS, F, 4 * F, 0.0, None, None, None),
    "Xᵀ·δQ, Xᵀ·δK, Xᵀ·δV (64×64 by 512)": (3, 1, 0, F, F, ROWS, 0.0, None, None, None),
    "Xᵀ·[δQ δK δV] (64×192 by 512)": (0, 1, 0, F, 3 * F, ROWS, 0.0, None, None, None),
    "Xᵀ·δZ of Wo and the head (64×64 by 512)": (2, 1, 0, F, F, ROWS, 0.0, None, None, None),
    "Xᵀ·δZ of W1 (64×256 by 512)": (1, 1, 0, F, 4 * F, ROWS, 0.0, None, None, None),
    "Xᵀ·δZ of W2 (256×64 by 512)": (1, 1, 0, 4 * F, F, ROWS, 0.0, None, None, None),
    # seqmm's blocks: 64 per call; qk twice (S, δP), av twice (O, δQ), atv twice (δV, δK)
    "seqmm qk block (32×32 by 16)": (2 * H * N, 0, 1, T, T, D, 0.0, N * F, N * F, N * T),
    "seqmm av block (32×16 by 32)": (2 * H * N, 0, 0, T, D, T, 0.0, N * T, N * F, N * F),
    "seqmm atv block (32×16 by 32)": (2 * H * N, 1, 0, T, D, T, 0.0, N * T, N * F, N * F),
}
FUSED = {"X·[Wq Wk Wv] (512×192 by 64)": "X·Wq, X·Wk, X·Wv (512×64 by 64)",
         "[δQ δK δV]·[Wq Wk Wv]ᵀ (512×64 by 192)": "δQ·Wqᵀ + δK·Wkᵀ + δV·Wvᵀ (3 × 512×64 by 64)",
         "Xᵀ·[δQ δK δV] (64×192 by 512)": "Xᵀ·δQ, Xᵀ·δK, Xᵀ·δV (64×64 by 512)"}


def blas():
    lib = ctypes.CDLL(os.path.join(ob.get_lib_dir(), f"lib{ob.get_library()}.so"))
    gemm = lib.scipy_cblas_dgemm
    p, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    gemm.argtypes = [i, i, i, i, i, i, d, p, i, p, i, d, p, i]
    gemm.restype = None
    return gemm


def operands(ta, tb, m, nc, k, beta, lda, ldb, ldc, rng):
    """Arrays large enough for the strided reads, and the call's arguments."""
    lda = lda or (m if ta else k)
    ldb = ldb or (k if tb else nc)
    ldc = ldc or nc
    a = rng.standard_normal(((k if ta else m) * lda))
    b = rng.standard_normal(((nc if tb else k) * ldb))
    c = rng.standard_normal((m * ldc))
    args = (ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, nc, k, 1.0,
            a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)
    return (a, b, c), args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    rounds = ap.parse_args().rounds
    gemm, rng = blas(), np.random.default_rng(0)
    _, empty = operands(0, 0, 0, 0, 0, 0.0, 1, 1, 1, rng)
    calls = {}
    for name, (_, ta, tb, m, nc, k, beta, lda, ldb, ldc) in PRODUCTS.items():
        keep, args = operands(ta, tb, m, nc, k, beta, lda, ldb, ldc, rng)
        reps = 3 if m * nc * k >= 10**8 else 200
        calls[name] = (keep, args, reps, 2.0 * m * nc * k)
        for _ in range(min(reps, 20)):
            gemm(*args)
    times = {name: [] for name in calls}
    overhead = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(1000):
            gemm(*empty)
        overhead.append((time.thread_time() - t0) / 1000)
        for name, (_, args, reps, _) in calls.items():
            t0 = time.thread_time()
            for _ in range(reps):
                gemm(*args)
            times[name].append((time.thread_time() - t0) / reps)
    print(f"one thread, {rounds} rounds, median µs per product; load {open('/proc/loadavg').read().split()[:3]}")
    total = {"dense": 0.0, "seqmm": 0.0}
    ctypes_call = statistics.median(overhead)
    print(f"  (a ctypes call: {ctypes_call * 1e6:.2f} µs, taken off the seqmm rows)")
    for name, (count, *_rest) in PRODUCTS.items():
        sec = statistics.median(times[name])
        if name.startswith("seqmm"):
            sec -= ctypes_call
        rate = calls[name][3] / sec / 1e9
        part = "seqmm" if name.startswith("seqmm") else "dense"
        total[part] += count * sec
        each = f"× {count:3d} = {count * sec * 1e6:8.1f} µs" if count else ""
        print(f"  {name:48s} {sec * 1e6:9.1f} µs  {rate:5.1f} GFLOP/s  {each}")
    print(f"per loss_and_grad: dense products {total['dense'] * 1e6:.0f} µs, "
          f"seqmm blocks {total['seqmm'] * 1e6:.0f} µs")
    saved = sum(PRODUCTS[sep][0] * statistics.median(times[sep]) - statistics.median(times[fused])
                for fused, sep in FUSED.items())
    print(f"Q, K, V as one product (forward and both adjoints): saves {saved * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
