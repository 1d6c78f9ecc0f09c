"""The C runtime helpers in bpgen/backends/c/runtime/: they compile cleanly for
both dtypes, and (float64) they compute what NumPy computes."""
import importlib.util
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

from bpgen.backends.c.build import BUILD

RUNTIME = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "bpgen", "backends", "c", "runtime")
HELPERS = ["sigmoid", "softplus", "tanh", "exp", "gemm_nn", "gemm_tn", "gemm_nt",
           # products added into a result (bpgen.passes.accumulate)
           "gemm_nn_acc", "gemm_tn_acc", "gemm_nt_acc",
           # a weight gradient (a split call's slices make it together: test_threads.py)
           "gemm_tn_out", "colsum", "rowsum",
           "sumall", "copy_cols", "rowmax", "gather", "scatter", "take_argmax", "put_argmax",
           # gather/scatter patterns as loop nests; pooling in one pass (primitives/gather.py)
           "im2col", "col2im", "windows", "windows_adj", "transpose_blocks",
           "take_argmax_windows", "put_argmax_windows",
           # gather, scatter and the arg-max over k directions (their batched rules)
           "gather_dirs", "scatter_dirs", "take_argmax_dirs", "put_argmax_dirs",
           "take_argmax_windows_dirs", "put_argmax_windows_dirs",
           # token rows, attention's per-sample block products and causal mask
           "take_rows", "add_rows", "seqmm", "causal_mask", "causal_mask_max",
           # the structured Hessian's assembly (bpgen/assembly; numerics: test_assembly.py)
           "hess_loss", "hess_transpose", "hess_scale", "hess_ones", "hess_chain_start",
           "hess_scale_columns", "hess_kron", "hess_kron_sym", "hess_mirror", "nonzero",
           # hessian_columns over k directions at once (the layouts of a direction)
           "dirs_to_cols", "cols_to_dirs",
           # its chunk loop's directions in and results out (bpgen/backends/c/columns.py)
           "columns_in", "columns_out",
           # the full Hessian from its rows: (h + hᵀ)/2 in tiles (runtime/call.py's _symmetrise)
           "symmetrise"]
# -fopenmp-simd as in bpgen's own CFLAGS: gemm_nt has a `#pragma omp simd`
SYNTAX_FLAGS = ["-std=gnu99", "-fopenmp-simd", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
BUILD_FLAGS = ["-std=gnu99", "-O2", "-fopenmp-simd"]
DTYPES = {"double": [], "float": ["-DBPG_FLOAT32"]}

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")


def _read(name):
    with open(os.path.join(RUNTIME, name + ".c"), encoding="utf-8") as fh:
        return fh.read()


def _source(helpers=HELPERS):
    return "\n".join(_read(n) for n in ["prelude"] + list(helpers))


def _syntax_check(source, extra):
    proc = subprocess.run(["gcc"] + SYNTAX_FLAGS + extra + ["-x", "c", "-"],
                          input=source.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


#: helpers whose file also holds an always-inlined twin (primitives/seqmm.py chooses)
TWINS = {"seqmm": ("seqmm_unrolled",)}


def test_one_helper_per_file():
    files = sorted(f[:-2] for f in os.listdir(RUNTIME) if f.endswith(".c"))
    # fastcall.c: the CPython entry points (tests/test_fastcall.py), split.c
    # their calls' batch split (tests/test_threads.py), per_sample.c the
    # per-sample functions' loops (tests/test_per_sample.py): not helpers
    assert files == sorted(HELPERS + ["prelude", "fastcall", "split", "per_sample"])
    for name in HELPERS:
        text = _read(name)
        assert text.startswith("/*"), name
        assert "{{" not in text and "{%" not in text, name
        # one function: inline, or cloned per vector width (BPG_ENTRY, prelude.c);
        # seqmm.c: its body always inlined (small blocks) and a plain copy
        # left to the compiler (large ones: no unrolled copy per call site)
        functions = text.count("static inline") + text.count("static BPG_ENTRY")
        assert functions == (2 if name in TWINS else 1), name
        assert f" bpg_{name}(" in text, name
        assert all(f" bpg_{twin}(" in text for twin in TWINS.get(name, ())), name


@needs_gcc
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_all_helpers_compile(dtype):
    _syntax_check(_source(), DTYPES[dtype])


@needs_gcc
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("helper", HELPERS)
def test_each_helper_compiles_alone(dtype, helper):
    _syntax_check(_source([helper]), DTYPES[dtype])


@needs_gcc
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_per_sample_loops_compile(dtype):
    """runtime/per_sample.c after the prelude (its only dependency: the
    BLAS call), warnings as errors, both dtypes."""
    _syntax_check(_source([]) + "\n" + _read("per_sample"), DTYPES[dtype])


# ---- numerics (float64) through a small cffi extension ----

CDEF = """
double w_sigmoid(double z);
double w_tanh(double z);
double w_exp(double z);
void w_exp_loop(int64_t n, const double *z, double *out);
void w_tanh_loop(int64_t n, const double *z, double *out);
double w_softplus(double z);
void w_gemm_nn(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_tn(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_nt(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_nn_acc(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_tn_acc(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_nt_acc(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_gemm_tn_out(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, double *C);
void w_colsum(int64_t R, int64_t C, const double *A, double *out);
void w_rowsum(int64_t R, int64_t C, const double *A, double *out);
void w_sumall(int64_t R, int64_t C, const double *A, double *out);
void w_rowmax(int64_t R, int64_t C, const double *A, double *out);
void w_copy_cols(int64_t R, int64_t W, const double *A, int64_t CA, int64_t from,
                 double *B, int64_t CB, int64_t to);
int64_t w_blas_chunk(int ta, int tb, int64_t M, int64_t Nc, int64_t K);
int64_t w_blas_slice(int ta, int tb, int64_t M, int64_t Nc, int64_t K);
int64_t w_blas_tile(int ta, int tb, int64_t M, int64_t Nc, int64_t K);
int w_blas_gemm_ab(int ta, int tb, int64_t M, int64_t Nc, int64_t K, double alpha,
                   const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                   double *C, int64_t ldc);
int w_blas_threads(int n);
void w_dirs_to_cols(int64_t K, int64_t R, int64_t C, const double *D, int64_t ld, double *X);
void w_cols_to_dirs(int64_t K, int64_t R, int64_t C, const double *X, double *D, int64_t ld);
void w_columns_in(int64_t K, int64_t nb, const int32_t *blocks, const double *V, int64_t total,
                  int64_t j, int64_t first, double *base);
void w_columns_out(int64_t K, int64_t nb, const int32_t *blocks, const double *base, double *out,
                   int64_t total, int64_t j);
void w_causal_mask(int64_t R, int64_t T, int64_t N, int64_t K, int causal, const double *m,
                   double fill, const double *a, double *out);
void w_causal_mask_max(int64_t R, int64_t T, int64_t N, int64_t K, int causal, const double *m,
                       double fill, const double *a, double *out, double *mx);
int w_nonzero(const double *V, int64_t size, int64_t K, const double *a, int64_t j, int64_t at);
void w_symmetrise(int64_t n, double *h);
"""

WRAPPERS = """
double w_sigmoid(double z) { return bpg_sigmoid(z); }
double w_tanh(double z) { return bpg_tanh(z); }
void w_tanh_loop(int64_t n, const double *restrict z, double *restrict out)
{
    #pragma omp simd
    for (int64_t k = 0; k < n; k++) out[k] = bpg_tanh(z[k]);
}
double w_softplus(double z) { return bpg_softplus(z); }
double w_exp(double z) { return bpg_exp(z); }
void w_exp_loop(int64_t n, const double *restrict z, double *restrict out)
{
    #pragma omp simd
    for (int64_t k = 0; k < n; k++) out[k] = bpg_exp(z[k]);
}
#define GEMM_WRAPPER(t) \\
    void w_gemm_##t(int64_t M, int64_t Nc, int64_t K, const double *A, const double *B, \\
                    double *C) { bpg_gemm_##t(M, Nc, K, A, B, C); }
GEMM_WRAPPER(nn)
GEMM_WRAPPER(tn)
GEMM_WRAPPER(nt)
GEMM_WRAPPER(nn_acc)
GEMM_WRAPPER(tn_acc)
GEMM_WRAPPER(nt_acc)
GEMM_WRAPPER(tn_out)
#ifdef BPG_BLAS
int64_t w_blas_chunk(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{ return bpg_blas_chunk(ta, tb, M, Nc, K); }
int64_t w_blas_slice(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{ return bpg_blas_slice(ta, tb, M, Nc, K); }
int64_t w_blas_tile(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{ return bpg_blas_tile(ta, tb, M, Nc, K); }
int w_blas_gemm_ab(int ta, int tb, int64_t M, int64_t Nc, int64_t K, double alpha,
                   const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                   double *C, int64_t ldc)
{ return bpg_blas_gemm_ab(ta, tb, M, Nc, K, alpha, A, lda, B, ldb, beta, C, ldc, 0); }
/* the BLAS's thread count, set to n if n > 0; returns the count before */
int w_blas_threads(int n)
{ const int was = bpg_blas_threads(); if (n > 0) bpg_blas_set_threads(n); return was; }
#else
int64_t w_blas_chunk(int ta, int tb, int64_t M, int64_t Nc, int64_t K) { return -1; }
int64_t w_blas_slice(int ta, int tb, int64_t M, int64_t Nc, int64_t K) { return -1; }
int64_t w_blas_tile(int ta, int tb, int64_t M, int64_t Nc, int64_t K) { return -1; }
int w_blas_gemm_ab(int ta, int tb, int64_t M, int64_t Nc, int64_t K, double alpha,
                   const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                   double *C, int64_t ldc) { return 0; }
int w_blas_threads(int n) { return 1; }
#endif
#define REDUCE_WRAPPER(f) \\
    void w_##f(int64_t R, int64_t C, const double *A, double *out) { bpg_##f(R, C, A, out); }
REDUCE_WRAPPER(colsum)
REDUCE_WRAPPER(rowsum)
REDUCE_WRAPPER(sumall)
REDUCE_WRAPPER(rowmax)
void w_copy_cols(int64_t R, int64_t W, const double *A, int64_t CA, int64_t from,
                 double *B, int64_t CB, int64_t to)
{ bpg_copy_cols(R, W, A, CA, from, B, CB, to); }
void w_dirs_to_cols(int64_t K, int64_t R, int64_t C, const double *D, int64_t ld, double *X)
{ bpg_dirs_to_cols(K, R, C, D, ld, X); }
void w_cols_to_dirs(int64_t K, int64_t R, int64_t C, const double *X, double *D, int64_t ld)
{ bpg_cols_to_dirs(K, R, C, X, D, ld); }
void w_columns_in(int64_t K, int64_t nb, const int32_t *blocks, const double *V, int64_t total,
                  int64_t j, int64_t first, double *base)
{ bpg_columns_in(K, nb, blocks, V, total, j, first, base); }
void w_columns_out(int64_t K, int64_t nb, const int32_t *blocks, const double *base, double *out,
                   int64_t total, int64_t j)
{ bpg_columns_out(K, nb, blocks, base, out, total, j); }
void w_causal_mask(int64_t R, int64_t T, int64_t N, int64_t K, int causal, const double *m,
                   double fill, const double *a, double *out)
{ bpg_causal_mask(R, T, N, K, causal, m, fill, a, out); }
void w_causal_mask_max(int64_t R, int64_t T, int64_t N, int64_t K, int causal, const double *m,
                       double fill, const double *a, double *out, double *mx)
{ bpg_causal_mask_max(R, T, N, K, causal, m, fill, a, out, mx); }
int w_nonzero(const double *V, int64_t size, int64_t K, const double *a, int64_t j, int64_t at)
{ return bpg_nonzero(V, size, K, a, j, at); }
void w_symmetrise(int64_t n, double *h) { bpg_symmetrise(n, h); }
"""


@needs_gcc
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_all_helpers_compile_with_the_blas(dtype):
    if not BUILD.blas:
        pytest.skip("no BLAS configured (scipy-openblas32 is not installed)")
    _syntax_check(_source(), DTYPES[dtype] + ["-DBPG_BLAS"]
                  + [f"-I{d}" for d in BUILD.include_dirs])


@pytest.fixture(scope="module", params=["inline", "blas"])
def rt(request, tmp_path_factory):
    """(ffi, lib) of the helpers compiled for float64: every product inline,
    or every product through the BLAS (thresholds 0)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    cffi = pytest.importorskip("cffi")
    blas = request.param == "blas"
    if blas and not BUILD.blas:
        pytest.skip("no BLAS configured (scipy-openblas32 is not installed)")
    tmp = tmp_path_factory.mktemp("c_runtime")
    name = f"_bpg_runtime_test_{request.param}"
    builder = cffi.FFI()
    builder.cdef(CDEF)
    defines = ("#define BPG_BLAS\n#define BPG_BLAS_MIN_NN 0\n#define BPG_BLAS_MIN_TN 0\n"
               "#define BPG_BLAS_MIN_NT 0\n") if blas else ""
    builder.set_source(name, defines + _source() + WRAPPERS, extra_compile_args=BUILD_FLAGS,
                       include_dirs=list(BUILD.include_dirs) if blas else [],
                       library_dirs=list(BUILD.library_dirs) if blas else [],
                       libraries=list(BUILD.libraries) if blas else ["m"],
                       extra_link_args=BUILD.link_args if blas else [])
    path = builder.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib


def _ptr(ffi, a):
    assert a.dtype == np.float64 and a.flags.c_contiguous
    return ffi.cast("double *", a.ctypes.data)


def _rel_err(got, ref):
    return np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300)


SHAPES = [(1, 1, 1), (1, 5, 3), (4, 1, 6), (3, 7, 1), (2, 3, 5), (9, 4, 13), (17, 11, 8),
          # done by the BLAS in column chunks (bpg_blas_chunk): nn, and nt too
          (16, 512, 128), (16, 128, 512), (32, 96, 400), (16, 520, 128),
          # done by the BLAS in slices of A's rows with one BLAS thread
          # (bpg_blas_slice): nn by C's rows, tn by the inner sum (K)
          (512, 64, 64), (300, 64, 64), (64, 64, 512), (64, 200, 300),
          # done in tiles of C (bpg_blas_tile), rows of more than 31,250 multiply-adds:
          # A·B 16 rows by 64 or more columns (40 rows: a tile of 8 at the end), A·Bᵀ
          # 8 rows (33, 256, 256: a last tile of 1 row; 44, 400, 120: 8 x 80, then 4)
          (40, 128, 400), (64, 192, 300), (33, 256, 256), (44, 400, 120)]


@pytest.fixture
def one_blas_thread(rt):
    """The BLAS on one thread during the test (the slices' condition)."""
    ffi, lib = rt
    was = lib.w_blas_threads(1)
    yield
    lib.w_blas_threads(was)


@pytest.mark.parametrize("M,Nc,K", SHAPES)
def test_gemm(rt, one_blas_thread, M, Nc, K):
    ffi, lib = rt
    rng = np.random.default_rng(M * 10000 + Nc * 100 + K)
    A = rng.standard_normal((M, K))
    B = rng.standard_normal((K, Nc))
    cases = [(lib.w_gemm_nn, A, B),                                 # A · B
             (lib.w_gemm_tn, np.ascontiguousarray(A.T), B),         # A stored (K x M)
             # outside a split call's slice, gemm_tn_out is gemm_tn
             (lib.w_gemm_tn_out, np.ascontiguousarray(A.T), B),
             (lib.w_gemm_nt, A, np.ascontiguousarray(B.T))]         # B stored (Nc x K)
    ref = A @ B
    for fn, a, b in cases:
        C = np.full((M, Nc), np.nan)    # the helpers must overwrite, not accumulate
        fn(M, Nc, K, _ptr(ffi, a), _ptr(ffi, b), _ptr(ffi, C))
        assert _rel_err(C, ref) < 1e-12, fn


@pytest.mark.parametrize("M,Nc,K", SHAPES)
def test_gemm_acc(rt, one_blas_thread, M, Nc, K):
    """The _acc helpers add the product into C (inline and by the BLAS)."""
    ffi, lib = rt
    rng = np.random.default_rng(M * 10000 + Nc * 100 + K + 1)
    A = rng.standard_normal((M, K))
    B = rng.standard_normal((K, Nc))
    C0 = rng.standard_normal((M, Nc))
    cases = [(lib.w_gemm_nn_acc, A, B),
             (lib.w_gemm_tn_acc, np.ascontiguousarray(A.T), B),
             (lib.w_gemm_nt_acc, A, np.ascontiguousarray(B.T))]
    ref = C0 + A @ B
    for fn, a, b in cases:
        C = C0.copy()
        fn(M, Nc, K, _ptr(ffi, a), _ptr(ffi, b), _ptr(ffi, C))
        assert _rel_err(C, ref) < 1e-12, fn


def test_blas_column_chunks(rt):
    """Which products the BLAS does in column chunks, and how wide."""
    ffi, lib = rt
    if lib.w_blas_chunk(0, 0, 1, 1, 1) == -1:
        pytest.skip("products run inline")
    chunk = lib.w_blas_chunk
    assert chunk(0, 0, 16, 512, 128) == 256          # an LSTM step's h·Wh: 2 chunks
    assert chunk(0, 1, 16, 128, 512) == 64           # its δ·Whᵀ (K >= 2·Nc)
    assert chunk(0, 0, 32, 1024, 256) == 64          # 16 chunks
    assert chunk(0, 1, 32, 96, 400) == 48
    for args in [(0, 0, 16, 256, 128),              # fits the small kernels already
                 (0, 0, 33, 512, 128),              # more rows
                 (1, 0, 16, 512, 128),              # A transposed
                 (0, 1, 16, 512, 128),              # B transposed, K < 2·Nc
                 (0, 0, 8, 4096, 512),              # would take more than 16 chunks
                 (0, 0, 16, 520, 128)]:             # no equal chunks 16k wide
        assert chunk(*args) == args[3], args


@pytest.mark.parametrize("ta,M,Nc,K", [(0, 512, 64, 64), (0, 300, 64, 64), (1, 64, 64, 512),
                                        (1, 64, 200, 300), (0, 9, 4, 13), (0, 40, 128, 400)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_blas_gemm_alpha_in_row_slices(rt, one_blas_thread, ta, M, Nc, K, beta):
    """C = alpha·op(A)·B + beta·C through the BLAS wrapper, for products it
    makes in row slices too (the split's slice weights are its alpha:
    every slice must carry it, and only the first the beta)."""
    ffi, lib = rt
    if lib.w_blas_slice(0, 0, 1, 1, 1) == -1:
        pytest.skip("products run inline")
    rng = np.random.default_rng(M + Nc + K + ta)
    A = rng.standard_normal((M, K))
    B = rng.standard_normal((K, Nc))
    C0 = rng.standard_normal((M, Nc))
    a = np.ascontiguousarray(A.T) if ta else A
    C = C0.copy()
    assert lib.w_blas_gemm_ab(ta, 0, M, Nc, K, 0.37, _ptr(ffi, a), a.shape[1], _ptr(ffi, B), Nc,
                              beta, _ptr(ffi, C), Nc) == 1
    assert _rel_err(C, 0.37 * (A @ B) + beta * C0) < 1e-12


def test_blas_row_slices(rt, one_blas_thread):
    """Which products the BLAS does in slices of A's rows, and how many rows each."""
    ffi, lib = rt
    if lib.w_blas_slice(0, 0, 1, 1, 1) == -1:
        pytest.skip("products run inline")
    slice_ = lib.w_blas_slice
    assert slice_(0, 0, 512, 64, 64) == 176         # X·W, T·N = 512 rows: 3 slices
    assert slice_(1, 0, 64, 64, 512) == 176         # Xᵀ·δZ: 3 slices of the sum
    assert slice_(0, 0, 512, 256, 64) == 56         # 10 slices of 56 rows (1e6 / 64 / 256 = 61)
    assert slice_(0, 0, 300, 64, 64) == 152         # 2 slices, 152 and 148 rows
    for args, rows in [((0, 1, 512, 64, 64), 512),        # B transposed
                       ((0, 0, 512, 16, 64), 512),        # fits the small kernels already
                       ((0, 0, 32, 1024, 256), 32),       # few rows (column chunks instead)
                       ((1, 0, 1024, 1024, 64), 64),      # a slice would be under 32 rows
                       ((1, 0, 64, 64, 32), 32)]:
        assert slice_(*args) == rows, args
    lib.w_blas_threads(2)                            # several BLAS threads: one call
    assert slice_(0, 0, 512, 64, 64) == 512


def test_blas_tiles(rt, one_blas_thread):
    """Which products the BLAS does in tiles of C (16 rows, 8 for A·Bᵀ), and how wide."""
    ffi, lib = rt
    if lib.w_blas_tile(0, 0, 1, 1, 1) == -1:
        pytest.skip("products run inline")
    tile = lib.w_blas_tile
    assert tile(0, 0, 1024, 256, 784) == 64          # the 784 MLP's X·W: 16 x 64 x 784
    assert tile(0, 0, 64, 256, 784) == 64            # the same in a split's slice of 64 rows
    assert tile(0, 0, 128, 256, 256) == 128          # its A·W: 16 x 128 x 256
    assert tile(0, 0, 40, 128, 400) == 128
    assert tile(0, 1, 1024, 256, 256) == 128         # its δZ·Wᵀ: 8 x 128 x 256
    assert tile(0, 1, 64, 400, 120) == 80            # 8 x 80 x 120
    assert tile(0, 1, 256, 512, 128) == 128          # at most 128 wide (8 x 256 x 128 fits 2^18)
    for args in [(0, 0, 512, 64, 64),                # rows fit 32-row slices (bpg_blas_slice)
                 (0, 0, 32, 256, 784),               # few rows (column chunks instead)
                 (1, 0, 784, 256, 1024),             # A transposed
                 (0, 1, 1024, 128, 512),             # B transposed, K > 256
                 (0, 0, 512, 512, 128),              # not transposed, K < 256
                 (0, 0, 256, 2048, 1024),            # K > 976: a 16 x 64 tile would not fit
                 (0, 0, 64, 120, 400)]:              # no multiple of 16 >= 64 divides Nc
        assert tile(*args) == 0, args
    lib.w_blas_threads(2)                            # several BLAS threads: one call
    assert tile(0, 0, 1024, 256, 784) == 0


@pytest.mark.parametrize("R,C", [(1, 1), (1, 6), (5, 1), (4, 7), (13, 3)])
def test_reductions(rt, R, C):
    ffi, lib = rt
    rng = np.random.default_rng(R * 100 + C)
    A = rng.standard_normal((R, C)) - 3.0      # all-negative rows catch a 0-initialised max
    for fn, ref in [(lib.w_colsum, A.sum(axis=0)), (lib.w_rowsum, A.sum(axis=1)),
                    (lib.w_sumall, np.array([A.sum()])), (lib.w_rowmax, A.max(axis=1))]:
        out = np.full(ref.shape, np.nan)
        fn(R, C, _ptr(ffi, A), _ptr(ffi, out))
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12, err_msg=str(fn))


@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("causal,keys", [(1, False), (1, True), (0, True)])
def test_causal_mask_and_its_row_max(rt, K, causal, keys):
    """bpg_causal_mask and bpg_causal_mask_max (in place and not) against
    NumPy: scores of h = 2 heads, T = 5 steps, 3 samples times K directions
    (row (j·T + t)·N + n·K + k), keys after the query and padding masked;
    the row max equals rowmax of the masked scores."""
    ffi, lib = rt
    h, T, nb = 2, 5, 3
    N = nb * K
    rng = np.random.default_rng(K * 10 + causal * 2 + keys)
    a = rng.standard_normal((h * T * N, T)) - 3.0
    lengths = [5, 2, 1]
    m = np.array([[1.0 if s < lengths[n] else 0.0 for n in range(nb)] for s in range(T)])
    r = np.arange(h * T * N)
    t, n = (r // N) % T, (r % N) // K
    masked = np.zeros_like(a, dtype=bool)
    if causal:
        masked |= np.arange(T)[None, :] > t[:, None]
    if keys:
        masked |= (m.T[n] == 0)
    mp = _ptr(ffi, m.ravel()) if keys else ffi.NULL
    for fill in (-np.inf, 0.0):
        ref = np.where(masked, fill, a)
        out = np.full_like(a, np.nan)
        lib.w_causal_mask(h * T * N, T, N, K, causal, mp, fill, _ptr(ffi, a), _ptr(ffi, out))
        np.testing.assert_array_equal(out, ref)
        for in_place in (False, True):
            src = a.copy()
            out = src if in_place else np.full_like(a, np.nan)
            mx = np.full(h * T * N, np.nan)
            lib.w_causal_mask_max(h * T * N, T, N, K, causal, mp, fill, _ptr(ffi, src),
                                  _ptr(ffi, out), _ptr(ffi, mx))
            np.testing.assert_array_equal(out, ref)
            np.testing.assert_array_equal(mx, ref.max(axis=1))


@pytest.mark.parametrize("R,W,CA,frm,CB,to", [(1, 1, 1, 0, 1, 0), (3, 2, 5, 1, 6, 4),
                                              (4, 3, 3, 0, 7, 2), (2, 0, 3, 1, 3, 1)])
def test_copy_cols(rt, R, W, CA, frm, CB, to):
    ffi, lib = rt
    rng = np.random.default_rng(R + W + CA)
    A = rng.standard_normal((R, CA))
    B = rng.standard_normal((R, CB))
    ref = B.copy()
    ref[:, to:to + W] = A[:, frm:frm + W]
    lib.w_copy_cols(R, W, _ptr(ffi, A), CA, frm, _ptr(ffi, B), CB, to)
    np.testing.assert_array_equal(B, ref)


@pytest.mark.parametrize("K,R,C,ld", [(1, 1, 1, 1), (3, 2, 5, 10), (4, 3, 2, 7)])
def test_direction_layouts(rt, K, R, C, ld):
    """bpg_dirs_to_cols: K direction-major R x C matrices (stride ld) ->
    X[i, d, :] = D_d[i, :]; bpg_cols_to_dirs puts them back (and writes
    nothing between the directions when ld > R*C)."""
    ffi, lib = rt
    rng = np.random.default_rng(K * 100 + R * 10 + C)
    flat = rng.standard_normal(K * ld)
    D = [flat[d * ld:d * ld + R * C].reshape(R, C) for d in range(K)]
    X = np.empty((R, K, C))
    lib.w_dirs_to_cols(K, R, C, _ptr(ffi, flat), ld, _ptr(ffi, X))
    np.testing.assert_array_equal(X, np.stack(D, axis=1))
    back = np.full(K * ld, 7.0)
    lib.w_cols_to_dirs(K, R, C, _ptr(ffi, X), _ptr(ffi, back), ld)
    for d in range(K):
        np.testing.assert_array_equal(back[d * ld:d * ld + R * C].reshape(R, C), D[d])
        assert np.all(back[d * ld + R * C:(d + 1) * ld] == 7.0)


@pytest.mark.parametrize("K,j,first", [(1, 0, 0), (3, 2, 0), (4, 1, 5), (2, 0, 37)])
def test_columns_in_and_out(rt, K, j, first):
    """bpg_columns_in: the K directions from row j of V (count x total) into
    blocks {R, C, at, ws} of v, each (R, K, C) at base + ws*K; with V NULL
    the unit vectors e_(first + j) ..; bpg_columns_out: blocks of that
    layout into rows j .. of out, nothing else written."""
    ffi, lib = rt
    shapes = [(3, 4), (1, 4), (5, 2), (1, 1)]
    total = sum(r * c for r, c in shapes)
    ws = [7, 100, 40, 0]                       # where each block lives (times K), any order
    table, at = [], 0
    for (r, c), w in zip(shapes, ws):
        table += [r, c, at, w]
        at += r * c
    blocks = np.array(table, dtype=np.int32)
    bp = ffi.cast("int32_t *", blocks.ctypes.data)
    count = j + K + 1
    V = np.random.default_rng(K).standard_normal((count, total))
    size = (max(ws) + 40) * K
    for vt in (V, None):
        base = np.full(size, np.nan)
        lib.w_columns_in(K, 4, bp, ffi.NULL if vt is None else _ptr(ffi, vt), total, j, first,
                         _ptr(ffi, base))
        dirs = (vt[j:j + K] if vt is not None
                else np.eye(total)[first + j:first + j + K] if first + j + K <= total else None)
        at = 0
        for (r, c), w in zip(shapes, ws):
            X = base[w * K:w * K + r * K * c].reshape(r, K, c)
            if dirs is not None:
                want = dirs[:, at:at + r * c].reshape(K, r, c).transpose(1, 0, 2)
            else:                               # unit vectors past the end: zero there
                e = np.zeros((K, total))
                for d in range(K):
                    if first + j + d < total:
                        e[d, first + j + d] = 1
                want = e[:, at:at + r * c].reshape(K, r, c).transpose(1, 0, 2)
            np.testing.assert_array_equal(X, want)
            at += r * c
        out = np.full((count, total), 7.0)
        lib.w_columns_out(K, 4, bp, _ptr(ffi, base), _ptr(ffi, out), total, j)
        want = np.full((count, total), 7.0)
        want[j:j + K] = dirs if dirs is not None else e
        np.testing.assert_array_equal(out, want)


def test_nonzero(rt):
    """bpg_nonzero: is a block of v nonzero in one of K directions: read
    (V given), or for the unit vectors e_j .. e_(j+K-1) whether one falls
    in the block's entries at .. at+size-1 (nothing read)."""
    ffi, lib = rt
    a = np.zeros(12)
    V = ffi.cast("double *", 1)                  # "given": only its nullness is looked at
    assert lib.w_nonzero(V, 4, 3, _ptr(ffi, a), 0, 0) == 0
    a[11] = -0.0
    assert lib.w_nonzero(V, 4, 3, _ptr(ffi, a), 0, 0) == 0
    a[11] = 1e-300
    assert lib.w_nonzero(V, 4, 3, _ptr(ffi, a), 0, 0) == 1
    for j in range(12):                          # a block of 4 entries from 5, K = 3
        want = any(5 <= i < 9 for i in range(j, j + 3))
        assert lib.w_nonzero(ffi.NULL, 4, 3, ffi.NULL, j, 5) == want, j


@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 70])
def test_symmetrise(rt, n):
    """bpg_symmetrise: (h + hᵀ)/2 in place, the same bits as the NumPy
    expression (tiles of 32: n around and across a tile's edge)."""
    ffi, lib = rt
    h = np.random.default_rng(n).standard_normal((n, n))
    want = (h + h.T) * 0.5
    lib.w_symmetrise(n, _ptr(ffi, h))
    np.testing.assert_array_equal(h, want)


Z = [-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0]


def test_sigmoid(rt):
    _, lib = rt
    z = np.array(Z)
    got = np.array([lib.w_sigmoid(v) for v in Z])
    with np.errstate(over="ignore"):
        ref = 1 / (1 + np.exp(-z))
    assert np.all(np.isfinite(got))
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=0)
    assert got[Z.index(0.0)] == 0.5


def test_tanh(rt):
    """bpg_tanh (the expm1 form) against NumPy's tanh, scalar and in a
    vectorised loop, over |z| from 1e-300 to 800 and at 0, inf, NaN."""
    ffi, lib = rt
    mag = np.concatenate([np.geomspace(1e-300, 1e-8, 50), np.geomspace(1e-8, 30, 20000),
                          [19.0, 20.0, 800.0]])
    z = np.concatenate([mag, -mag])
    out = np.empty_like(z)
    lib.w_tanh_loop(z.size, _ptr(ffi, z), _ptr(ffi, out))
    scalar = np.array([lib.w_tanh(v) for v in z[::97]])
    np.testing.assert_allclose(out, np.tanh(z), rtol=1e-15, atol=0)     # a few ulp
    np.testing.assert_allclose(scalar, np.tanh(z[::97]), rtol=1e-15, atol=0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    got = np.array([lib.w_tanh(v) for v in special])
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and np.isnan(got[4])


def test_exp(rt):
    """bpg_exp (runtime/exp.c) is exp wherever exp is a normal number, 0
    below (-708: where libmvec's vector exp would take its slow path), in a
    vectorised loop and scalar; exp(-inf) = 0, NaN and inf as exp's."""
    ffi, lib = rt
    z = np.concatenate([np.linspace(-708.0, 709.0, 20001), [-1e-300, 0.0, 1e-300],
                        np.geomspace(1e-12, 1.0, 200)])
    out = np.empty_like(z)
    lib.w_exp_loop(z.size, _ptr(ffi, z), _ptr(ffi, out))
    np.testing.assert_allclose(out, np.exp(z), rtol=1e-15, atol=0)     # libmvec: a few ulp
    scalar = np.array([lib.w_exp(v) for v in z[::101]])
    np.testing.assert_allclose(scalar, np.exp(z[::101]), rtol=1e-15, atol=0)
    # half the lanes below the range (a causal mask's -inf): 0 there, exp elsewhere
    below = np.array([-np.inf, -1e308, -800.0, -745.2, -708.5, -708.0000001])
    mixed = np.where(np.arange(64) % 2 == 0, np.resize(below, 64), np.linspace(-5, 5, 64))
    out = np.empty_like(mixed)
    lib.w_exp_loop(mixed.size, _ptr(ffi, mixed), _ptr(ffi, out))
    np.testing.assert_array_equal(out[::2], 0.0)
    np.testing.assert_allclose(out[1::2], np.exp(mixed[1::2]), rtol=1e-15, atol=0)
    special = [lib.w_exp(v) for v in (np.inf, np.nan, -np.inf, -708.0)]
    assert special[0] == np.inf and np.isnan(special[1]) and special[2] == 0.0
    assert special[3] == np.exp(-708.0) > np.finfo(np.float64).tiny


def test_softplus(rt):
    _, lib = rt
    got = np.array([lib.w_softplus(v) for v in Z])
    ref = np.logaddexp(0, np.array(Z))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=0)
    assert got[Z.index(800.0)] == 800.0


@needs_gcc
@pytest.mark.skipif(platform.machine() != "x86_64" or not platform.libc_ver()[0] == "glibc"
                    or tuple(int(v) for v in platform.libc_ver()[1].split(".")[:2]) < (2, 35),
                    reason="glibc's vector math (libmvec >= 2.35, x86-64) only")
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_math_loops_are_vectorised(dtype):
    """An elementwise loop calls libmvec's vector variants in both dtypes (a
    float32 module once called scalar tanhf: GCC applied only one of two
    _Pragma in a macro)."""
    real = "float" if dtype == "float" else "double"
    suffix = "f" if dtype == "float" else ""
    src = _source([]) + f"""
void loop(int64_t n, const {real} *restrict a, {real} *restrict b)
{{
    #pragma omp simd
    for (int64_t k = 0; k < n; k++)
        b[k] = tanh{suffix}(a[k]) + exp{suffix}(a[k]) + log1p{suffix}(a[k]);
}}
"""
    proc = subprocess.run(["gcc"] + BUILD_FLAGS + ["-fno-math-errno", "-fno-trapping-math"]
                          + DTYPES[dtype] + ["-S", "-o", "-", "-x", "c", "-"],
                          input=src.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    asm = proc.stdout.decode()
    for f in ("tanh", "exp", "log1p"):
        assert f"v_{f}{suffix}" in asm, f"{f}{suffix} not vectorised"


@needs_gcc
@pytest.mark.skipif(platform.machine() != "x86_64" or not platform.libc_ver()[0] == "glibc"
                    or tuple(int(v) for v in platform.libc_ver()[1].split(".")[:2]) < (2, 35),
                    reason="glibc's vector math (libmvec >= 2.35, x86-64) only")
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("isa", ["-mavx2", "-mavx512f"])
def test_clamped_exp_is_vectorised(dtype, isa):
    """bpg_exp's clamped form (runtime/exp.c) keeps a loop vectorised at
    AVX2 and AVX-512, and its vector exp takes the clamped argument: the
    compiler has not replaced it by the raw one (the slow path again)."""
    real = "float" if dtype == "float" else "double"
    suffix = "f" if dtype == "float" else ""
    src = _source(["exp"]) + f"""
void loop(int64_t n, const {real} *restrict a, {real} *restrict b)
{{
    #pragma omp simd
    for (int64_t k = 0; k < n; k++) b[k] = bpg_exp(a[k]);
}}
"""
    proc = subprocess.run(["gcc"] + BUILD_FLAGS + ["-fno-math-errno", "-fno-trapping-math", isa]
                          + DTYPES[dtype] + ["-S", "-o", "-", "-x", "c", "-"],
                          input=src.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    asm = proc.stdout.decode()
    assert f"v_exp{suffix}" in asm, "not vectorised"
    # the argument is a blend of z and the range's end (an and/or or a
    # masked move), made before the call
    body = asm[asm.index("loop:"):]
    before_call = body[:body.index(f"v_exp{suffix}")]
    assert any(op in before_call for op in ("blend", "vpor", "vpternlog", "vorp")), before_call
