/* Prelude of an exported network (bpgen export): what the runtime helpers
   and the generated functions expect from bpgen/backends/c/runtime/prelude.c
   (the element type `real`, its math functions, the product thresholds and
   the optional BLAS call), without the Python module's parts: no threads,
   no state, no allocation, no I/O, no compiler-specific attribute.  Before
   this file: BPG_FLOAT32 (float elements) and, to send large products to a
   CBLAS, BPG_USE_CBLAS with BPG_CBLAS_GEMM naming its ?gemm; BPG_PRODUCTS
   when the code multiplies matrices (the product kernel and the BLAS call
   are left out otherwise). */
#include <math.h>
#include <stddef.h>
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

/* The loops' `omp simd` hints: pragmas only when asked for (BPG_OPENMP_SIMD,
   with -fopenmp-simd, or under OpenMP), so that a strict compilation
   (-Wall: unknown pragmas) sees none. */
#if defined(_OPENMP) || defined(BPG_OPENMP_SIMD)
#define BPG_OMP(x) _Pragma(#x)
#else
#define BPG_OMP(x)
#endif

/* With the hints, glibc's vector math (libmvec, x86-64) as in the module's
   prelude: declared `omp declare simd`, the elementwise loops call exp,
   tanh, ... 2, 4 or 8 elements at a time. */
#if defined(BPG_OPENMP_SIMD) && defined(__x86_64__) && defined(__GLIBC__) \
    && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 35)
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

/* one plain copy of each function (the Python module's target_clones are
   GCC- and glibc-specific) */
#define BPG_ENTRY
/* plain stores (the module's non-temporal ones are x86-specific) */
#define bpg_put_nt(p, v) (*(p) = (v))
#define BPG_USE_NT(ld) 0
#define BPG_NT_FENCE() ((void)0)

/* Products with at least this many multiply-adds (M·Nc·K) go to the BLAS
   when there is one; smaller ones run inline (the module's thresholds). */
#ifndef BPG_BLAS_MIN_NN
#define BPG_BLAS_MIN_NN 16.0
#endif
#ifndef BPG_BLAS_MIN_TN
#define BPG_BLAS_MIN_TN 128.0
#endif
#ifndef BPG_BLAS_MIN_NT
#define BPG_BLAS_MIN_NT 512.0
#endif

#ifdef BPG_PRODUCTS
/* The library's own product kernel: C (M x Nc) = op(A)·B, B not transposed
   (returns 0 for a transposed B: the helper's own loops run), rows lda,
   ldb, ldc elements apart.  Blocks of 4 rows by BPG_NR columns of C are
   accumulated in local arrays over the whole K (each element of B loaded
   once for 4 rows, each element of C stored once), one panel of BPG_NR
   columns of B after the other (every block of rows reuses it while it is
   in the cache); the columns' loop is the vectorised one.  The sum over k runs in the order of the helper's
   loops (k ascending from 0).  A block's missing rows (M not a multiple of
   4) reuse row 0's pointer and are not stored. */
#define BPG_NR (128 / (int)sizeof(real))
static inline int bpg_own_gemm(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                               const real *restrict A, int64_t lda, const real *restrict B,
                               int64_t ldb, real *restrict C, int64_t ldc)
{
    int64_t i0, j0, k;
    int j;
    if (tb)
        return 0;
    /* a panel of BPG_NR columns of B (K rows) at a time, reused by every
       block of 4 rows while it is in the cache */
    for (j0 = 0; j0 < Nc; j0 += BPG_NR) {
        const int nr = Nc - j0 < BPG_NR ? (int)(Nc - j0) : BPG_NR;
        for (i0 = 0; i0 < M; i0 += 4) {
            const int64_t mr = M - i0 < 4 ? M - i0 : 4;
            /* where row r of op(A) starts, and the step from k to k + 1 */
            const int64_t sk = ta ? lda : 1, sr = ta ? 1 : lda;
            const real *a0 = A + (ta ? i0 : i0 * lda);
            const real *a1 = a0 + (mr > 1 ? sr : 0);
            const real *a2 = a0 + (mr > 2 ? 2 * sr : 0);
            const real *a3 = a0 + (mr > 3 ? 3 * sr : 0);
            real c0[BPG_NR], c1[BPG_NR], c2[BPG_NR], c3[BPG_NR];
            real *c;
            for (j = 0; j < BPG_NR; j++)
                c0[j] = c1[j] = c2[j] = c3[j] = 0;
            if (nr == BPG_NR) {
                for (k = 0; k < K; k++) {
                    const real *restrict b = B + k * ldb + j0;
                    const real x0 = a0[k * sk], x1 = a1[k * sk], x2 = a2[k * sk],
                               x3 = a3[k * sk];
                    BPG_OMP(omp simd)
                    for (j = 0; j < BPG_NR; j++) {
                        c0[j] += x0 * b[j];
                        c1[j] += x1 * b[j];
                        c2[j] += x2 * b[j];
                        c3[j] += x3 * b[j];
                    }
                }
            } else {
                for (k = 0; k < K; k++) {
                    const real *restrict b = B + k * ldb + j0;
                    const real x0 = a0[k * sk], x1 = a1[k * sk], x2 = a2[k * sk],
                               x3 = a3[k * sk];
                    for (j = 0; j < nr; j++) {
                        c0[j] += x0 * b[j];
                        c1[j] += x1 * b[j];
                        c2[j] += x2 * b[j];
                        c3[j] += x3 * b[j];
                    }
                }
            }
            c = C + i0 * ldc + j0;
            for (j = 0; j < nr; j++)
                c[j] = c0[j];
            if (mr > 1)
                for (j = 0; j < nr; j++)
                    c[ldc + j] = c1[j];
            if (mr > 2)
                for (j = 0; j < nr; j++)
                    c[2 * ldc + j] = c2[j];
            if (mr > 3)
                for (j = 0; j < nr; j++)
                    c[3 * ldc + j] = c3[j];
        }
    }
    return 1;
}

#ifdef BPG_USE_CBLAS
/* Columns per BLAS call of a product (Nc: all of them, one call): as the
   module's bpg_blas_chunk (backends/c/runtime/prelude.c, measured there on
   OpenBLAS): a product of few rows and more than BPG_SMALL_MADDS
   multiply-adds as up to 16 equal column chunks that each stay on
   OpenBLAS's small-matrix kernels.  -DBPG_SMALL_CHUNKS=0: one call. */
#ifndef BPG_SMALL_CHUNKS
#define BPG_SMALL_CHUNKS 1
#endif
#define BPG_SMALL_ROWS 32
#define BPG_SMALL_MADDS 1e6
static inline int64_t bpg_blas_chunk(int ta, int tb, int64_t M, int64_t Nc, int64_t K)
{
    const double madds = (double)M * (double)Nc * (double)K;
    int64_t fit, c;
    if (!BPG_SMALL_CHUNKS || ta || M > BPG_SMALL_ROWS || madds <= BPG_SMALL_MADDS
        || (tb && K < 2 * Nc))
        return Nc;
    fit = (int64_t)(BPG_SMALL_MADDS / ((double)M * (double)K)) / 16 * 16;
    if (fit < 16)
        return Nc;
    for (c = (Nc + fit - 1) / fit; c <= 16 && 16 * c <= Nc; c++)
        if (Nc % (16 * c) == 0)
            return Nc / c;
    return Nc;
}

/* C = op(A)·op(B) by the CBLAS (row-major, 32-bit integer sizes) when the
   product is large enough and its sizes fit an int; returns 0 to fall back
   to the inline loops. */
static inline int bpg_blas_gemm_ld(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                   const real *A, int64_t lda, const real *B, int64_t ldb,
                                   real *C, int64_t ldc, double min_madds)
{
    int64_t w, j0;
    if ((double)M * (double)Nc * (double)K < min_madds || M > INT32_MAX || Nc > INT32_MAX
        || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
        return bpg_own_gemm(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc);
    w = bpg_blas_chunk(ta, tb, M, Nc, K);
    for (j0 = 0; j0 < Nc; j0 += w) {
        const int64_t wj = Nc - j0 < w ? Nc - j0 : w;
        BPG_CBLAS_GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                       tb ? CblasTrans : CblasNoTrans, (int)M, (int)wj, (int)K, 1, A, (int)lda,
                       B + (tb ? j0 * ldb : j0), (int)ldb, 0, C + j0, (int)ldc);
    }
    return 1;
}

#else
/* no BLAS: every product not transposed in B by the kernel above */
#define bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc, min_madds) \
    bpg_own_gemm(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc)
#endif
/* The same for contiguous operands: C (M x Nc) = op(A)·op(B). */
#define bpg_blas_gemm(ta, tb, M, Nc, K, A, B, C, min_madds) \
    bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, (ta) ? (M) : (K), B, (tb) ? (K) : (Nc), C, Nc, \
                     min_madds)
#endif
