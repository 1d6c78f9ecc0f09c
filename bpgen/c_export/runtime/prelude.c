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
/* The library's own product kernel: C (M x Nc) = op(A)·op(B), rows lda,
   ldb, ldc elements apart, in tiles of BPG_MR x BPG_NR elements of C.  A
   tile's accumulators are local variables (c<row><column>, written out by
   the macros below) that compilers keep in registers: vectors, or scalars
   which they vectorise across a row (GCC's SLP at -O2); the tile follows
   the vector width the compiler targets (BPG_VECTOR_BYTES, below).  For
   each k the tile loads BPG_MR elements of op(A) and BPG_NR of op(B) for
   BPG_MR·BPG_NR multiply-adds.  A whole tile accumulates in C itself (from
   0 on the first panel of k); a partial one (M or Nc not a multiple of the
   tile's: its missing rows read row 0 again) in a stack copy, of which only
   the real rows and columns are stored.  op(B)'s BPG_NR columns are read
   where they lie when B is not transposed and the tile is full; otherwise
   (B transposed, or the last columns) a panel of at most BPG_KC of its
   rows is first copied, zero-padded, into a stack buffer of BPG_KC·BPG_NR
   elements (BPG_PANEL_BYTES), and every tile of rows reuses it; so is a
   panel of a B whose rows lie a multiple of 4 KB apart (below).  Each
   element's sum over k runs in the order of a plain loop (k ascending from
   0; across panels of BPG_KC rows the sum so far is stored in C and read
   back; a vector's lane is one element's sum), so the result is that of
   the plain loop, bit for bit, whatever the tile.  C99 with no intrinsics
   and no pragma; the vectors are GCC's and Clang's vector extension, used
   only under __GNUC__. */

/* The vector registers' width in bytes: from the compiler's predefined
   macros (x86: AVX-512F 64, AVX 32, otherwise 16: SSE2, NEON, ...), or
   given (-DBPG_VECTOR_BYTES=16|32|64). */
#ifndef BPG_VECTOR_BYTES
#if defined(__AVX512F__)
#define BPG_VECTOR_BYTES 64
#elif defined(__AVX__)
#define BPG_VECTOR_BYTES 32
#else
#define BPG_VECTOR_BYTES 16
#endif
#endif
/* The tile for that width (measured: benchmarks/export_kernel.py,
   docs/performance.md): BPG_MR rows of BPG_NR elements, BPG_NACC
   accumulators a row.  With 32- or 64-byte vectors (AVX, AVX-512) and
   GCC's or Clang's vector extension the accumulators are vectors of that
   width (a lane per element of C, each its own sum in the same order as a
   scalar's): one a row of 4 rows at 64 bytes (8 rows for float), two a row
   of 4 rows at 32 bytes.  Otherwise (16 bytes: SSE2, NEON; another
   compiler; -DBPG_NO_VECTOR_TYPES) they are 4 rows of 64 bytes of scalars,
   which compilers vectorise across a row.  -DBPG_MR=... -DBPG_NV=... (vectors
   a row) or -DBPG_NR=... (scalars a row) choose another tile. */
#if defined(__GNUC__) && BPG_VECTOR_BYTES >= 32 && !defined(BPG_NO_VECTOR_TYPES)
#define BPG_VECTOR_TYPES 1
#define BPG_VL ((int)(BPG_VECTOR_BYTES / sizeof(real)))
#ifndef BPG_MR
#if BPG_VECTOR_BYTES == 64 && defined(BPG_FLOAT32)
#define BPG_MR 8
#else
#define BPG_MR 4
#endif
#endif
#ifndef BPG_NV
#if BPG_VECTOR_BYTES == 64
#define BPG_NV 1
#else
#define BPG_NV 2
#endif
#endif
#define BPG_NACC BPG_NV
#define BPG_NR (BPG_NV * BPG_VL)
typedef real bpg_vec __attribute__((vector_size(BPG_VECTOR_BYTES)));
#else
#define BPG_VECTOR_TYPES 0
#ifndef BPG_MR
#define BPG_MR 4
#endif
#ifndef BPG_NR
#ifdef BPG_FLOAT32
#define BPG_NR 16
#else
#define BPG_NR 8
#endif
#endif
#define BPG_NACC BPG_NR
#endif
/* the copied panel of op(B): BPG_KC rows of BPG_NR elements */
#ifndef BPG_PANEL_BYTES
#define BPG_PANEL_BYTES 4096
#endif
#define BPG_KC ((int64_t)(BPG_PANEL_BYTES / (BPG_NR * sizeof(real))))

/* op(i, j) for every accumulator of row i (j: two hex digits), then for
   every row i < BPG_MR (f(op, i)), then of the whole tile */
#define BPG_COLS_1(op, i) op(i, 00)
#define BPG_COLS_2(op, i) BPG_COLS_1(op, i) op(i, 01)
#define BPG_COLS_3(op, i) BPG_COLS_2(op, i) op(i, 02)
#define BPG_COLS_4(op, i) BPG_COLS_3(op, i) op(i, 03)
#define BPG_COLS_8(op, i) BPG_COLS_4(op, i) op(i, 04) op(i, 05) op(i, 06) op(i, 07)
#define BPG_COLS_16(op, i) BPG_COLS_8(op, i) op(i, 08) op(i, 09) op(i, 0a) op(i, 0b) \
    op(i, 0c) op(i, 0d) op(i, 0e) op(i, 0f)
#define BPG_COLS_24(op, i) BPG_COLS_16(op, i) op(i, 10) op(i, 11) op(i, 12) op(i, 13) \
    op(i, 14) op(i, 15) op(i, 16) op(i, 17)
#define BPG_COLS_32(op, i) BPG_COLS_24(op, i) op(i, 18) op(i, 19) op(i, 1a) op(i, 1b) \
    op(i, 1c) op(i, 1d) op(i, 1e) op(i, 1f)
#define BPG_ROWS_1(f, op) f(op, 0)
#define BPG_ROWS_2(f, op) BPG_ROWS_1(f, op) f(op, 1)
#define BPG_ROWS_3(f, op) BPG_ROWS_2(f, op) f(op, 2)
#define BPG_ROWS_4(f, op) BPG_ROWS_3(f, op) f(op, 3)
#define BPG_ROWS_5(f, op) BPG_ROWS_4(f, op) f(op, 4)
#define BPG_ROWS_6(f, op) BPG_ROWS_5(f, op) f(op, 5)
#define BPG_ROWS_7(f, op) BPG_ROWS_6(f, op) f(op, 6)
#define BPG_ROWS_8(f, op) BPG_ROWS_7(f, op) f(op, 7)
#define BPG_PASTE_(a, b) a##b
#define BPG_PASTE(a, b) BPG_PASTE_(a, b)
#define BPG_TILE_ROW(op, i) BPG_PASTE(BPG_COLS_, BPG_NACC)(op, i)
#define BPG_ROW_OP(op, i) op(i)
#define BPG_EACH_ROW(op) BPG_PASTE(BPG_ROWS_, BPG_MR)(BPG_ROW_OP, op)
#define BPG_TILE(op) BPG_PASTE(BPG_ROWS_, BPG_MR)(BPG_TILE_ROW, op)
#define BPG_T_A(i) const real *restrict a##i = a + (i < mr ? i : 0) * sr;
#define BPG_T_X(i) const real x##i = a##i[k * sk];
#if BPG_VECTOR_TYPES
#define BPG_T_DECL(i, j) bpg_vec c##i##j;
#define BPG_T_ZERO(i, j) memset(&c##i##j, 0, sizeof(bpg_vec));
#define BPG_T_FROM(i, j) memcpy(&c##i##j, c + i * ldc + 0x##j * BPG_VL, sizeof(bpg_vec));
#define BPG_T_B(i, j) bpg_vec b##j; memcpy(&b##j, bk + 0x##j * BPG_VL, sizeof(bpg_vec));
#define BPG_T_TO(i, j) memcpy(c + i * ldc + 0x##j * BPG_VL, &c##i##j, sizeof(bpg_vec));
#else
#define BPG_T_DECL(i, j) real c##i##j;
#define BPG_T_ZERO(i, j) c##i##j = 0;
#define BPG_T_FROM(i, j) c##i##j = c[i * ldc + 0x##j];
#define BPG_T_B(i, j) const real b##j = bk[0x##j];
#define BPG_T_TO(i, j) c[i * ldc + 0x##j] = c##i##j;
#endif
#define BPG_T_MADD(i, j) c##i##j += x##i * b##j;

/* One tile: c (BPG_MR x BPG_NR, rows ldc apart) = (first ? 0 : c) + the sum
   over k < K of a_i[k·sk]·b[k·ldb + j], k ascending, where row i of op(A)
   starts at a_i = a + i·sr (i < mr; the others read row 0). */
static inline void bpg_own_tile(int64_t K, const real *restrict a, int64_t sr, int mr, int64_t sk,
                                const real *restrict b, int64_t ldb, real *restrict c,
                                int64_t ldc, int first)
{
    /* K read through a volatile: a count the compiler cannot see.  When it
       can (a constant, even, after inlining), GCC 12 at -O2 vectorises this
       loop across k as in-order sums (two k at a time, each sum still
       added one term after the other): 1.5-2x slower than the tile's own
       vectors across a row. */
    volatile int64_t opaque = K;
    const int64_t kn = opaque;
    int64_t k;
    BPG_EACH_ROW(BPG_T_A)
    BPG_TILE(BPG_T_DECL)
    if (first) {
        BPG_TILE(BPG_T_ZERO)
    } else {
        BPG_TILE(BPG_T_FROM)
    }
    for (k = 0; k < kn; k++) {
        const real *restrict bk = b + k * ldb;
        BPG_TILE_ROW(BPG_T_B, 0)
        BPG_EACH_ROW(BPG_T_X)
        BPG_TILE(BPG_T_MADD)
    }
    BPG_TILE(BPG_T_TO)
}

/* C (M x Nc) = op(A)·op(B); returns 1 (the product is done). */
static inline int bpg_own_gemm(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                               const real *restrict A, int64_t lda, const real *restrict B,
                               int64_t ldb, real *restrict C, int64_t ldc)
{
    /* where row r of op(A) starts, and the step from k to k + 1 */
    const int64_t sk = ta ? lda : 1, sr = ta ? 1 : lda;
    real panel[BPG_KC * BPG_NR], t[BPG_MR][BPG_NR];
    int64_t i0, j0, k0, k;
    int i, j;
    if (K == 0) {
        for (i0 = 0; i0 < M; i0++)
            for (j0 = 0; j0 < Nc; j0++)
                C[i0 * ldc + j0] = 0;
        return 1;
    }
    for (j0 = 0; j0 < Nc; j0 += BPG_NR) {
        const int nr = Nc - j0 < BPG_NR ? (int)(Nc - j0) : BPG_NR;
        /* op(B)'s columns j0.. in place, or copied BPG_KC rows at a time:
           when B is transposed, for the last columns, and when B's rows lie
           a multiple of 4 KB apart and several tiles of rows reuse them
           (in place, those rows share a few sets of a typical L1 cache:
           the LSTM's 16 x 512 by 512 x 128 at -march=native, AVX-512, 14
           GFLOP/s in place, 27 copied; at baseline x86-64, SSE2, 16 and 13) */
        const int copy = tb || nr < BPG_NR
                         || (M > BPG_MR && ldb % (int64_t)(4096 / sizeof(real)) == 0);
        for (k0 = 0; k0 < K; k0 += copy ? BPG_KC : K) {
            const int64_t kc = !copy ? K : K - k0 < BPG_KC ? K - k0 : BPG_KC;
            const real *b = B + j0;
            int64_t sb = ldb;
            if (copy && tb) {
                for (j = 0; j < BPG_NR; j++)
                    for (k = 0; k < kc; k++)
                        panel[k * BPG_NR + j] = j < nr ? B[(j0 + j) * ldb + k0 + k] : 0;
            } else if (copy) {
                for (k = 0; k < kc; k++)
                    for (j = 0; j < BPG_NR; j++)
                        panel[k * BPG_NR + j] = j < nr ? B[(k0 + k) * ldb + j0 + j] : 0;
            }
            if (copy) {
                b = panel;
                sb = BPG_NR;
            }
            for (i0 = 0; i0 < M; i0 += BPG_MR) {
                const int mr = M - i0 < BPG_MR ? (int)(M - i0) : BPG_MR;
                const real *a0 = A + i0 * sr + k0 * sk;
                real *c = C + i0 * ldc + j0;
                if (mr == BPG_MR && nr == BPG_NR) {
                    /* a whole tile: its sums so far (after the first panel) in C */
                    bpg_own_tile(kc, a0, sr, mr, sk, b, sb, c, ldc, k0 == 0);
                    continue;
                }
                /* a part of one: in t, with C's sums so far */
                for (i = 0; i < BPG_MR; i++)
                    for (j = 0; j < BPG_NR; j++)
                        t[i][j] = k0 > 0 && i < mr && j < nr ? c[i * ldc + j] : 0;
                bpg_own_tile(kc, a0, sr, mr, sk, b, sb, &t[0][0], BPG_NR, 0);
                for (i = 0; i < mr; i++)
                    for (j = 0; j < nr; j++)
                        c[i * ldc + j] = t[i][j];
            }
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
/* no BLAS: every product by the kernel above */
#define bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc, min_madds) \
    bpg_own_gemm(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc)
#endif
/* The same for contiguous operands: C (M x Nc) = op(A)·op(B). */
#define bpg_blas_gemm(ta, tb, M, Nc, K, A, B, C, min_madds) \
    bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, (ta) ? (M) : (K), B, (tb) ? (K) : (Nc), C, Nc, \
                     min_madds)
/* C = alpha·op(A)·op(B), for the runtime's seqmm (beta is always 0 there;
   the export prints every seqmm with alpha 1: a scale folded into the
   product is the module's plan, passes/fold_scale.py, not the export's). */
static inline int bpg_blas_gemm_ab(int ta, int tb, int64_t M, int64_t Nc, int64_t K, real alpha,
                                   const real *A, int64_t lda, const real *B, int64_t ldb,
                                   real beta, real *C, int64_t ldc, double min_madds)
{
    int64_t i, j;
    (void)beta;
    (void)min_madds;        /* (unused without the BLAS: the macro above drops it) */
    bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc, min_madds);
    if (alpha != 1)
        for (i = 0; i < M; i++)
            for (j = 0; j < Nc; j++)
                C[i * ldc + j] *= alpha;
    return 1;
}
#endif
