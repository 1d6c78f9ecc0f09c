"""Which BLAS the generated C calls for its large products: OpenBLAS from the
``scipy-openblas32`` wheel (a dependency: every install has it) or Intel MKL
from the ``mkl`` wheel (the ``bpgen[mkl]`` extra).

``BPGEN_BLAS=openblas|mkl|auto`` (default ``auto``) chooses.  ``auto`` times
both libraries on this CPU, single-threaded, through ctypes, on products of
the shapes a dense layer of the benchmark MLP makes (forward, and both
backward products, in the module's dtype; ~0.1 s), and takes MKL only when it
is at least ``MARGIN`` faster in total; without the extra it is OpenBLAS.  The
measurement is cached per CPU model, library versions, dtype and shapes in
``$BPGEN_CACHE_DIR/blas-choice.json`` (under a file lock), so only the first
build on a machine pays for it.
"""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import time

import filelock

__all__ = ["OPENBLAS", "MKL", "requested", "mkl_library", "mkl_version", "choose",
           "measure", "rates"]

OPENBLAS = "scipy-openblas32"
MKL = "mkl"
#: (M, N, K, transpose A, transpose B) of the products auto times: the
#: 784-256 layer at N = 128 (forward X·W, backward Xᵀ·dZ and dZ·Wᵀ) and a
#: 256-256 layer's forward product
SHAPES = ((128, 256, 784, 0, 0), (784, 256, 128, 1, 0), (128, 784, 256, 0, 1),
          (128, 256, 256, 0, 0))
#: MKL must be this much faster (total time) to be chosen over the dependency
MARGIN = 0.97
_CHOICES = ("auto", "openblas", "mkl")
_memo: dict = {}


def requested() -> str:
    """``BPGEN_BLAS`` from the environment: 'auto', 'openblas' or 'mkl'."""
    value = os.environ.get("BPGEN_BLAS", "").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"BPGEN_BLAS: expected one of {', '.join(_CHOICES)}, "
                         f"got {os.environ.get('BPGEN_BLAS')!r}")
    return value


def mkl_library() -> str | None:
    """Path of ``libmkl_rt.so.N`` from the installed ``mkl`` wheel, or None."""
    try:
        from importlib.metadata import PackageNotFoundError, files
        entries = files("mkl") or ()
    except PackageNotFoundError:
        return None
    for entry in entries:
        name = os.path.basename(str(entry))
        if name.startswith("libmkl_rt.so"):
            path = os.path.abspath(str(entry.locate()))
            if os.path.exists(path):
                return path
    return None


def mkl_version() -> str:
    from importlib.metadata import version
    return version("mkl")


def _openblas_library() -> str:
    import scipy_openblas32 as ob
    lib_dir = ob.get_lib_dir()
    name = ob.get_library()
    for f in sorted(os.listdir(lib_dir)):
        if f.startswith(f"lib{name}") and ".so" in f:
            return os.path.join(lib_dir, f)
    raise ValueError(f"BPGEN_BLAS: no lib{name}.so in {lib_dir}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


class _Lib:
    """One BLAS through ctypes: its own gemm symbols (ctypes.CDLL opens with
    RTLD_LOCAL and looks names up in that library only)."""

    def __init__(self, which: str, dtype: str):
        real = ctypes.c_float if dtype == "float32" else ctypes.c_double
        p, i = ctypes.c_void_p, ctypes.c_int
        letter = "s" if dtype == "float32" else "d"
        if which == MKL:
            self.lib = ctypes.CDLL(mkl_library())
            # the C names (MKL_Set_...); lower-case mkl_set_... are the
            # Fortran ones, which take pointers
            self.lib.MKL_Set_Interface_Layer.restype = i
            if self.lib.MKL_Set_Interface_Layer(0) != 0:   # MKL_INTERFACE_LP64
                raise ValueError("BPGEN_BLAS: MKL is not in its LP64 interface "
                                 "(MKL_INTERFACE_LAYER?)")
            self.gemm = getattr(self.lib, f"cblas_{letter}gemm")
            self.get_threads = self.lib.MKL_Get_Max_Threads
            self.set_threads = self.lib.MKL_Set_Num_Threads
        else:
            self.lib = ctypes.CDLL(_openblas_library())
            self.gemm = getattr(self.lib, f"scipy_cblas_{letter}gemm")
            self.get_threads = self.lib.scipy_openblas_get_num_threads
            self.set_threads = self.lib.scipy_openblas_set_num_threads
        self.gemm.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        self.gemm.restype = None
        self.get_threads.restype = i
        self.set_threads.argtypes = [i]

    def call(self, shape, a, b, c):
        m, n, k, ta, tb = shape
        self.gemm(101, 112 if ta else 111, 112 if tb else 111, m, n, k, 1.0,
                  a.ctypes.data, m if ta else k, b.ctypes.data, k if tb else n, 0.0,
                  c.ctypes.data, n)


def measure(dtype: str, shapes=SHAPES, reps: int = 9, which=(OPENBLAS, MKL)) -> dict:
    """{library: [median seconds per product, one per shape]}, single-threaded,
    the libraries interleaved call by call (so that drift hits both)."""
    import numpy as np
    libs = {w: _Lib(w, dtype) for w in which}
    rng = np.random.default_rng(0)
    saved = {w: lib.get_threads() for w, lib in libs.items()}
    times = {w: [[] for _ in shapes] for w in libs}
    try:
        for lib in libs.values():
            lib.set_threads(1)
        for s, shape in enumerate(shapes):
            m, n, k, _, _ = shape
            a = rng.standard_normal(m * k).astype(dtype)
            b = rng.standard_normal(k * n).astype(dtype)
            c = np.empty(m * n, dtype)
            for lib in libs.values():          # warm-up
                lib.call(shape, a, b, c)
            for _ in range(reps):
                for w, lib in libs.items():
                    t0 = time.perf_counter()
                    lib.call(shape, a, b, c)
                    times[w][s].append(time.perf_counter() - t0)
    finally:
        for w, lib in libs.items():
            lib.set_threads(saved[w])
    return {w: [statistics.median(t) for t in ts] for w, ts in times.items()}


def rates(dtype: str, shapes=SHAPES, reps: int = 9, which=(OPENBLAS, MKL)) -> dict:
    """{library: [GFLOP/s per shape]} (2·M·N·K flops per product)."""
    which = tuple(w for w in which if w != MKL or mkl_library())
    med = measure(dtype, shapes, reps, which)
    return {w: [2 * s[0] * s[1] * s[2] / t / 1e9 for s, t in zip(shapes, ts)]
            for w, ts in med.items()}


def choose(dtype: str, cache_dir: str) -> str:
    """The library ``BPGEN_BLAS=auto`` uses for a module in ``dtype``."""
    if mkl_library() is None:
        return OPENBLAS
    key = json.dumps([_cpu_model(), os.cpu_count(), _openblas_library(), mkl_library(),
                      mkl_version(), dtype, SHAPES, MARGIN])
    if key in _memo:
        return _memo[key]
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, "blas-choice.json")
    with filelock.FileLock(path + ".lock"):
        try:
            with open(path, encoding="utf-8") as fh:
                table = json.load(fh)
        except (OSError, ValueError):
            table = {}
        if key not in table:
            med = measure(dtype)
            total = {w: sum(ts) for w, ts in med.items()}
            choice = MKL if total[MKL] < MARGIN * total[OPENBLAS] else OPENBLAS
            table[key] = {"choice": choice, "seconds": total}
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(table, fh, indent=1)
            os.replace(tmp, path)
        _memo[key] = table[key]["choice"]
    return _memo[key]
