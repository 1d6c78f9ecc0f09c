/* Common prelude of the C runtime helpers: includes, constants, the element
   type `real` with its math functions (double, or float when BPG_FLOAT32 is
   defined before this file), and the BLAS used for large matrix products
   (when BPG_BLAS is defined: OpenBLAS from the scipy-openblas32 wheel, its
   symbols carry a scipy_ prefix, so it coexists with NumPy's own OpenBLAS;
   or, with BPG_BLAS_MKL too, Intel MKL's libmkl_rt, see below). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef M_SQRT2
#define M_SQRT2 1.41421356237309504880
#endif

#ifdef BPG_FLOAT32
typedef float real;
#define BPG_EXP expf
#define BPG_LOG1P log1pf
#define BPG_FABS fabsf
#else
typedef double real;
#define BPG_EXP exp
#define BPG_LOG1P log1p
#define BPG_FABS fabs
#endif

/* Vector versions of the math functions (glibc's libmvec, x86-64): declared
   `omp declare simd`, the elementwise loops (`#pragma omp simd`, with
   -fopenmp-simd) call them 2 (SSE2), 4 (AVX2) or 8 (AVX-512, with
   -march=native) elements at a time.  Their error is a few ulp. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 35)
/* one _Pragma per macro: GCC applies only the first of two in one expansion
   (the float variants were then never vectorised) */
#define BPG_SIMD_MATH(f) _Pragma("omp declare simd notinbranch") double f(double);
#define BPG_SIMD_MATHF(f) _Pragma("omp declare simd notinbranch") float f(float);
BPG_SIMD_MATH(exp)
BPG_SIMD_MATHF(expf)
BPG_SIMD_MATH(log)
BPG_SIMD_MATHF(logf)
BPG_SIMD_MATH(log1p)
BPG_SIMD_MATHF(log1pf)
BPG_SIMD_MATH(expm1)
BPG_SIMD_MATHF(expm1f)
BPG_SIMD_MATH(tanh)
BPG_SIMD_MATHF(tanhf)
BPG_SIMD_MATH(erf)
BPG_SIMD_MATHF(erff)
#undef BPG_SIMD_MATH
#undef BPG_SIMD_MATHF
#endif
#endif

/* Each generated function is compiled three times, for AVX-512, AVX2 and
   baseline x86-64 (GCC's target_clones); when the module is loaded, the
   dynamic loader binds the copy this CPU can run (an ifunc), so a module
   still runs on any x86-64.  The helpers here are `static inline`: each copy
   gets them, and the vector math above, at its own width (2, 4 or 8
   doubles).  The Hessian's large helpers, which are not inlined, are cloned
   themselves (the matrix products' are not: a tiny product would then pay
   an indirect call).  Measured on an AVX-512 machine: gradients 13-40%
   faster than with the baseline copy alone, for ~2.5x the compile time.
   BPG_NO_CLONES (BPGEN_CLONES=0 at build time), another compiler or another
   CPU family: one plain copy. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) \
    && defined(__GLIBC__) && !defined(BPG_NO_CLONES)
#define BPG_ENTRY __attribute__((target_clones("avx512f", "avx2", "default")))
/* runtime/exp.c: the vector exp without its slow path (AVX2, AVX-512 copies) */
#define BPG_EXP_CLAMP
#else
#define BPG_ENTRY
#endif

/* Non-temporal stores (SSE2 movnti, baseline x86-64), for the structured
   Hessian's transposed copies when H is larger than the caches: a line then
   goes to memory without first being read for ownership.  On a 2.3 M-entry
   Hessian (18 MB) they made the whole call ~20% faster; on a 160 k-entry one
   (1.3 MB, cache-resident) 1.8x slower, hence the size rule.  Elsewhere
   plain stores. */
#ifndef BPG_NT_MIN_BYTES
#define BPG_NT_MIN_BYTES 8e6
#endif
#if defined(__SSE2__) && defined(__x86_64__) && !defined(BPG_FLOAT32) && !defined(BPG_NO_NT)
#include <emmintrin.h>
static inline void bpg_put_nt(double *p, double v)
{
    long long bits;
    memcpy(&bits, &v, sizeof bits);
    _mm_stream_si64((long long *)p, bits);
}
/* a square matrix with rows ld elements apart too large for the caches */
#define BPG_USE_NT(ld) ((double)(ld) * (double)(ld) * sizeof(real) >= BPG_NT_MIN_BYTES)
#define BPG_NT_FENCE() _mm_sfence()
#else
#define bpg_put_nt(p, v) (*(p) = (v))
#define BPG_USE_NT(ld) 0
#define BPG_NT_FENCE() ((void)0)
#endif

/* Products with at least this many multiply-adds (M·Nc·K) go to the BLAS;
   smaller ones run inline, where the call overhead would dominate (measured
   crossovers, see docs/performance.md). */
#ifndef BPG_BLAS_MIN_NN
#define BPG_BLAS_MIN_NN 16.0
#endif
#ifndef BPG_BLAS_MIN_TN
#define BPG_BLAS_MIN_TN 128.0
#endif
#ifndef BPG_BLAS_MIN_NT
#define BPG_BLAS_MIN_NT 512.0
#endif

#ifdef BPG_BLAS
#ifdef BPG_BLAS_MKL
/* Intel MKL (the `mkl` wheel, BPGEN_BLAS, see blas.py): its CBLAS names are
   not prefixed (cblas_dgemm), and any library in the process's global scope
   may define the same names (an MKL or OpenBLAS another package loaded with
   RTLD_GLOBAL, a system libcblas).  Linked with -lmkl_rt, our references
   would bind to whichever the dynamic loader finds first, possibly not MKL
   at all.  So the module links nothing of MKL: it opens libmkl_rt by the
   path found at build time (BPG_MKL_RT, part of the cache key) with
   RTLD_LOCAL, which adds none of its names to the global scope (nothing
   else can bind to them), and takes the function pointers from that handle
   with dlsym, which searches that library only.  (libmkl_rt itself, on its
   first call, opens its parts RTLD_GLOBAL, so MKL's names do enter the
   global scope then; NumPy, SciPy and PyTorch leave no BLAS name undefined
   for them to capture: theirs are prefixed or linked in; tests/test_blas.py
   runs them with a module both ways round.)  The C names MKL_Set_...
   (lower-case mkl_set_... are the Fortran ones, taking pointers).  The LP64
   interface (32-bit integers, as below) is set before any other call: if
   MKL is already in another (MKL_INTERFACE_LAYER=ILP64), or the library
   cannot be opened, every product runs inline (with a warning). */
#include <dlfcn.h>
#include <stdio.h>
typedef int blasint;
#define CblasRowMajor 101
#define CblasNoTrans 111
#define CblasTrans 112
typedef void (*bpg_gemm_fn)(int, int, int, int, int, int, real, const real *, int,
                            const real *, int, real, real *, int);
static bpg_gemm_fn bpg_mkl_gemm;
static void (*bpg_mkl_set_threads)(int);
static int (*bpg_mkl_get_threads)(void);

__attribute__((constructor)) static void bpg_mkl_open(void)
{
    void *h = dlopen(BPG_MKL_RT, RTLD_NOW | RTLD_LOCAL);
    int (*layer)(int) = h ? (int (*)(int))dlsym(h, "MKL_Set_Interface_Layer") : NULL;
    if (layer && layer(0 /* MKL_INTERFACE_LP64 */) == 0) {
#ifdef BPG_FLOAT32
        bpg_mkl_gemm = (bpg_gemm_fn)dlsym(h, "cblas_sgemm");
#else
        bpg_mkl_gemm = (bpg_gemm_fn)dlsym(h, "cblas_dgemm");
#endif
        bpg_mkl_set_threads = (void (*)(int))dlsym(h, "MKL_Set_Num_Threads");
        bpg_mkl_get_threads = (int (*)(void))dlsym(h, "MKL_Get_Max_Threads");
        /* exactly the count set (no dynamic adjustment), so that a result
           depends only on the count, as with OpenBLAS */
        void (*dynamic)(int) = (void (*)(int))dlsym(h, "MKL_Set_Dynamic");
        if (dynamic)
            dynamic(0);
    }
    if (!bpg_mkl_gemm || !bpg_mkl_set_threads) {
        bpg_mkl_gemm = NULL;
        fprintf(stderr, "bpgen: cannot use MKL (%s): products run inline\n",
                h ? "not in its LP64 interface" : dlerror());
    }
}
#define BPG_BLAS_READY (bpg_mkl_gemm != NULL)
#define BPG_CBLAS_GEMM bpg_mkl_gemm
/* the BLAS's thread count (bpg_set_threads below calls it) */
static inline void bpg_blas_set_threads(int n)
{
    if (bpg_mkl_set_threads)
        bpg_mkl_set_threads(n);
}
/* OpenBLAS's column chunks (below) make MKL slower: 16 x 128 by 128 x 512
   as 2 chunks 69 -> 78 us, 32 x 256 x 256 108 -> 130 us (one core, this
   AMD EPYC): one call each */
#ifndef BPG_SMALL_CHUNKS
#define BPG_SMALL_CHUNKS 0
#endif
#define bpg_blas_threads() (bpg_mkl_get_threads ? bpg_mkl_get_threads() : 1)
#else
#include <cblas.h>
#ifdef BPG_FLOAT32
#define BPG_CBLAS_GEMM scipy_cblas_sgemm
#else
#define BPG_CBLAS_GEMM scipy_cblas_dgemm
#endif
#define BPG_BLAS_READY 1
#define bpg_blas_set_threads scipy_openblas_set_num_threads
#define bpg_blas_threads scipy_openblas_get_num_threads
#endif
/* OpenBLAS (0.3.34, SkylakeX kernels: AVX-512 CPUs) runs a product of at
   most 10^6 multiply-adds on its small-matrix kernels, which do not pack the
   operands; a larger one is packed first, which for a product with few rows
   (an LSTM step's h·Wh: 16 x 128 by 128 x 512) costs as much as the
   arithmetic.  Such a product is done as up to 16 equal column chunks that
   each fit, where that measured faster: at most BPG_SMALL_ROWS rows, A not
   transposed, and B not transposed or, if it is, K >= 2·Nc (the 16 x 512 by
   512 x 128 of the LSTM's backward step).  Measured single products: 1.1 to
   2.2x faster (16 x 128 x 512 both ways, 32 x 256 x 256, 32 x 1024 x 256);
   the LSTM benchmark's gradient 1.3x.  -DBPG_SMALL_CHUNKS=0 turns it off. */
#ifndef BPG_SMALL_CHUNKS
#define BPG_SMALL_CHUNKS 1
#endif
#define BPG_SMALL_ROWS 32
#define BPG_SMALL_MADDS 1e6

/* Columns per BLAS call of a product (Nc: all of them, one call). */
static inline int64_t bpg_blas_chunk(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{
    const double madds = (double)M * (double)Nc * (double)K;
    if (!BPG_SMALL_CHUNKS || ta || M > BPG_SMALL_ROWS || madds <= BPG_SMALL_MADDS
        || (tb && K < 2 * Nc))
        return Nc;
    const int64_t fit = (int64_t)(BPG_SMALL_MADDS / ((double)M * (double)K)) / 16 * 16;
    if (fit < 16)
        return Nc;
    /* the fewest equal chunks (a multiple of 16 wide) that fit */
    for (int64_t c = (Nc + fit - 1) / fit; c <= 16 && 16 * c <= Nc; c++)
        if (Nc % (16 * c) == 0)
            return Nc / c;
    return Nc;
}

/* A tall product, A·B or Aᵀ·B with A of many rows (a layer's X·W over
   T·N rows, or its Xᵀ·δZ, which sums over them), is done as equal slices of
   A's rows that each fit the small kernels: A·B as slices of C's rows, Aᵀ·B
   as slices of the sum, each added into C.  Where that measured faster
   (float64, one BLAS thread: a product on several threads keeps one call):
   more than BPG_SMALL_ROWS rows, B not transposed (A·Bᵀ measured 1.02-1.09x
   slower sliced), slices of at least 32 rows.  Measured single products
   (the transformer case's): 512 x 64 by 64 0.78-0.83x the time, 512 x 64 by
   256 0.82x, 512 x 256 by 64 0.94x, and Xᵀ·δZ 64 x 64, 64 x 256, 256 x 64
   by 512 0.79x, 0.92x, 0.81x (benchmarks/transformer_products.py). */
#ifndef BPG_FLOAT32
#define BPG_SMALL_SLICES BPG_SMALL_CHUNKS
#else
#define BPG_SMALL_SLICES 0      /* not measured for sgemm's small kernels */
#endif

/* Rows of A per BLAS call of a product (A's row count: one call). */
static inline int64_t bpg_blas_slice(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{
    const int64_t rows = ta ? K : M;
    const double madds = (double)M * (double)Nc * (double)K;
    if (!BPG_SMALL_SLICES || tb || madds <= BPG_SMALL_MADDS || rows <= BPG_SMALL_ROWS)
        return rows;
    const int64_t fit = (int64_t)(BPG_SMALL_MADDS / (madds / (double)rows)) / 8 * 8;
    if (fit < 32 || bpg_blas_threads() > 1)
        return rows;
    /* the fewest equal slices that fit, a multiple of 8 rows each */
    const int64_t c = (rows + fit - 1) / fit, r = ((rows + c - 1) / c + 7) / 8 * 8;
    return r < rows ? r : rows;
}

/* A wide product A·B or A·Bᵀ with many rows, each row too much work for the
   row slices above (Nc·K > 10^6 / 32, so a slice that fits would be under
   32 rows), is done as tiles of C with all of K, each tile on the small
   kernels, which do not pack: A·B as tiles of 16 rows by c columns, c the
   widest multiple of 16 that divides Nc with 16·c·K <= 10^6, at least 64,
   for 256 <= K (so K <= 976); A·Bᵀ as tiles of 8 rows by c, 8·c·K <= 2^18,
   64 <= c <= 128, for K <= 256.  0: no tiles.  Float64, one BLAS thread, never
   Aᵀ·B.  Measured single products (C timing loop, one pinned thread; A·B
   then A·Bᵀ): 64 x 784 by 256 523 -> 450 µs, 128 x 784 by 256 1,008 ->
   913, 1,024 x 784 by 256 8,628 -> 8,069, 64 x 256 by 256 169 -> 146,
   1,024 x 256 by 256 2,548 -> 2,380, 256 x 512 by 128 680 -> 590; 64 x 256
   by 256 174 -> 151, 1,024 x 256 by 256 2,755 -> 2,678, 64 x 120 by 400 126
   -> 116, 256 x 128 by 512 666 -> 650.  Slower, hence the bounds on K:
   A·B 512 x 128 by 512 1.06x (16 x 128 or 16 x 256), 256 x 200 by 512
   1.00-1.03x; A·Bᵀ 1,024 x 512 by 128 and 256 x 512 by 256 in 8 x 64 tiles
   1.03-1.13x, and tiles of 2,048 entries of C 1.5-1.7x (16 x 128 tiles at
   K = 256, 8 x 256 at K = 256 and 128: hence c <= 128). */
#define BPG_TILE_ROWS(tb) ((tb) ? 8 : 16)
static inline int64_t bpg_blas_tile(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{
    if (!BPG_SMALL_SLICES || ta || M <= BPG_SMALL_ROWS || (tb ? K > 256 : K < 256)
        || 32.0 * (double)Nc * (double)K <= BPG_SMALL_MADDS || bpg_blas_threads() > 1)
        return 0;
    const double most = tb ? 262144.0 : BPG_SMALL_MADDS;
    int64_t c = (int64_t)(most / ((double)BPG_TILE_ROWS(tb) * (double)K)) / 16 * 16;
    if (tb && c > 128)
        c = 128;
    for (; c >= 64; c -= 16)
        if (Nc % c == 0)
            return c;
    return 0;
}

/* C = alpha·op(A)·op(B) + beta·C (beta 0 or 1) with leading dimensions (rows of
   A, B, C lda, ldb, ldc elements apart) by the BLAS when the product is
   large enough (and its sizes fit the BLAS's 32-bit integers); returns 0 to
   fall back inline. */
static inline int bpg_blas_gemm_ab(int ta, int tb, int64_t M, int64_t Nc, int64_t K, real alpha,
                                   const real *A, int64_t lda, const real *B, int64_t ldb,
                                   real beta, real *C, int64_t ldc, double min_madds)
{
    if (!BPG_BLAS_READY || (double)M * (double)Nc * (double)K < min_madds || M > INT32_MAX || Nc > INT32_MAX
        || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
        return 0;
    const int64_t w = bpg_blas_chunk(ta, tb, M, Nc, K);
    const int64_t tile = w == Nc ? bpg_blas_tile(ta, tb, M, Nc, K) : 0;
    if (tile) {         /* ta == 0 here */
        const int64_t tr = BPG_TILE_ROWS(tb);
        for (int64_t i0 = 0; i0 < M; i0 += tr) {
            const int64_t ri = M - i0 < tr ? M - i0 : tr;
            for (int64_t j0 = 0; j0 < Nc; j0 += tile)   /* C[i0:i0+ri, j0:j0+tile] */
                BPG_CBLAS_GEMM(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                               (blasint)ri, (blasint)tile, (blasint)K, alpha, A + i0 * lda,
                               (blasint)lda, B + (tb ? j0 * ldb : j0), (blasint)ldb, beta,
                               C + i0 * ldc + j0, (blasint)ldc);
        }
        return 1;
    }
    const int64_t rows = ta ? K : M, r = w == Nc ? bpg_blas_slice(ta, tb, M, Nc, K) : rows;
    if (r < rows) {     /* tb == 0 here */
        for (int64_t i0 = 0; i0 < rows; i0 += r) {
            const int64_t ri = rows - i0 < r ? rows - i0 : r;
            if (ta)     /* C (+)= A[i0:i0+ri]ᵀ·B[i0:i0+ri], the first slice with beta */
                BPG_CBLAS_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)M, (blasint)Nc,
                               (blasint)ri, alpha, A + i0 * lda, (blasint)lda, B + i0 * ldb,
                               (blasint)ldb, i0 ? 1 : beta, C, (blasint)ldc);
            else        /* C[i0:i0+ri] (+)= A[i0:i0+ri]·B */
                BPG_CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)ri, (blasint)Nc,
                               (blasint)K, alpha, A + i0 * lda, (blasint)lda, B, (blasint)ldb, beta,
                               C + i0 * ldc, (blasint)ldc);
        }
        return 1;
    }
    for (int64_t j0 = 0; j0 < Nc; j0 += w) {
        const int64_t wj = Nc - j0 < w ? Nc - j0 : w;
        BPG_CBLAS_GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                       tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)wj, (blasint)K, alpha,
                       A, (blasint)lda, B + (tb ? j0 * ldb : j0), (blasint)ldb, beta,
                       C + j0, (blasint)ldc);
    }
    return 1;
}

/* the same with alpha 1 */
static inline int bpg_blas_gemm_beta(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                     const real *A, int64_t lda, const real *B, int64_t ldb,
                                     real beta, real *C, int64_t ldc, double min_madds)
{
    return bpg_blas_gemm_ab(ta, tb, M, Nc, K, 1, A, lda, B, ldb, beta, C, ldc, min_madds);
}

/* C = op(A)·op(B), leading dimensions as above. */
static inline int bpg_blas_gemm_ld(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                   const real *A, int64_t lda, const real *B, int64_t ldb,
                                   real *C, int64_t ldc, double min_madds)
{
    return bpg_blas_gemm_beta(ta, tb, M, Nc, K, A, lda, B, ldb, 0, C, ldc, min_madds);
}

/* The same for contiguous operands: C (M x Nc) = op(A)·op(B), or + C (_acc). */
static inline int bpg_blas_gemm(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                const real *A, const real *B, real *C, double min_madds)
{
    return bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, ta ? M : K, B, tb ? K : Nc, C, Nc, min_madds);
}

static inline int bpg_blas_gemm_acc(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                    const real *A, const real *B, real *C, double min_madds)
{
    return bpg_blas_gemm_beta(ta, tb, M, Nc, K, A, ta ? M : K, B, tb ? K : Nc, 1, C, Nc,
                              min_madds);
}

#else
#define bpg_blas_gemm(ta, tb, M, Nc, K, A, B, C, min_madds) 0
#define bpg_blas_gemm_acc(ta, tb, M, Nc, K, A, B, C, min_madds) 0
#define bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc, min_madds) 0
#define bpg_blas_gemm_ab(ta, tb, M, Nc, K, alpha, A, lda, B, ldb, beta, C, ldc, min_madds) 0
#endif

/* ---- BLAS threads (the rule: docs/performance.md, "Threads") ----------
   OpenBLAS's thread count is one number for the whole process (every bpgen
   module links the same library), and its products' rounding depends on it,
   so a count is never changed under a running call.  A call is "large" when
   the user's count n > 1 and its work (N times the work of one sample) is at
   least BPG_THREADS_MIN_WORK; large calls run one at a time, each with n BLAS
   threads; every other call runs with 1 thread, any number at once, never
   while a large call runs (a waiting large call goes first).  So at most n
   BLAS threads plus the calling threads run, and a call's result depends
   only on n and whether it is large, never on timing.  The state is shared
   by every module in the process: the first one loaded owns it, the others
   point at it (bpg_threads_share, see call.py). */
#include <pthread.h>
#ifndef BPG_THREADS_MIN_WORK
#define BPG_THREADS_MIN_WORK 4e6
#endif
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t turn;
    int small, large, waiting;   /* calls running (small, large), large calls waiting */
    int wanted;                  /* the user's count */
} bpg_threads_t;
static bpg_threads_t bpg_threads_own = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                        0, 0, 0, 1};
static bpg_threads_t *bpg_threads = &bpg_threads_own;

void *bpg_threads_state(void)
{
    return bpg_threads;
}

/* use another module's state (at load, before any call of this module) */
void bpg_threads_share(void *state)
{
    bpg_threads = state;
}

/* the BLAS's count to n (read back each time: another library, such as
   threadpoolctl, may have set it) */
#ifdef BPG_BLAS
static void bpg_threads_apply(int n)
{
#ifdef BPG_BLAS_MKL
    if (!bpg_mkl_get_threads || bpg_mkl_get_threads() != n)
        bpg_blas_set_threads(n);
#else
    if (scipy_openblas_get_num_threads() != n)
        scipy_openblas_set_num_threads(n);
#endif
}
#else
#define bpg_threads_apply(n) ((void)(n))
#endif

/* the number of BLAS threads for large calls (1 at load unless the user or
   the environment says otherwise, see call.py); calls running keep theirs */
void bpg_set_threads(int n)
{
    bpg_threads_t *t = bpg_threads;
    pthread_mutex_lock(&t->lock);
    t->wanted = n;
    if (!t->large)
        bpg_threads_apply(1);
    pthread_mutex_unlock(&t->lock);
}

int bpg_get_threads(void)
{
    return bpg_threads->wanted;
}

/* Before a call: waits for its turn, and returns the thread count the call
   runs with: the user's count n when it may be large (`large`: its work, N
   times one sample's, is at least BPG_THREADS_MIN_WORK or the caller's own
   threshold) and n > 1, else 1.  With `blas`, a large call's BLAS runs with
   n threads; without, the BLAS stays at 1 (the call splits its batch across
   n threads itself, runtime/split.c).  bpg_threads_leave(count > 1) after
   it.  (Without a BLAS the same rule holds; a large call can then only
   split.) */
int bpg_threads_take(int large, int blas)
{
    bpg_threads_t *t = bpg_threads;
    pthread_mutex_lock(&t->lock);
    const int n = t->wanted;
    large = large && n > 1;
    if (large) {
        t->waiting++;
        while (t->large || t->small)
            pthread_cond_wait(&t->turn, &t->lock);
        t->waiting--;
        t->large = 1;
        bpg_threads_apply(blas ? n : 1);
    } else {
        while (t->large || t->waiting)
            pthread_cond_wait(&t->turn, &t->lock);
        t->small++;
        bpg_threads_apply(1);
    }
    pthread_mutex_unlock(&t->lock);
    return large ? n : 1;
}

/* The same for a call of `work`, the BLAS given the count: 1 if the call
   runs as a large call, 0 if not. */
int bpg_threads_enter(double work)
{
    return bpg_threads_take(work >= BPG_THREADS_MIN_WORK, 1) > 1;
}

void bpg_threads_leave(int large)
{
    bpg_threads_t *t = bpg_threads;
    pthread_mutex_lock(&t->lock);
    if (large) {
        bpg_threads_apply(1);
        t->large = 0;
    } else {
        t->small--;
    }
    pthread_cond_broadcast(&t->turn);
    pthread_mutex_unlock(&t->lock);
}
