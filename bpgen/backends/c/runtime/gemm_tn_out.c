/* C (M x Nc) = Aᵀ·B summed over the samples (A's and B's K rows), written
   straight into an output of the function and read by nothing after: a
   weight gradient.  In a split call's slice (runtime/split.c sets
   bpg_out_product for the slice's thread) the slices make it together,
   each a block of C over every slice's samples, so their outputs
   need no sum after (returns 1); otherwise, as bpg_gemm_tn. */
#define BPG_GEMM_TN_OUT 1
typedef int (*bpg_out_product_fn)(void *ctx, int64_t M, int64_t Nc, int64_t K,
                                  const real *A, const real *B, real *C);
static __thread bpg_out_product_fn bpg_out_product;
static __thread void *bpg_out_ctx;

static inline void bpg_gemm_tn_out(int64_t M, int64_t Nc, int64_t K,
                                   const real *restrict A, const real *restrict B, real *restrict C)
{
    if (bpg_out_product && bpg_out_product(bpg_out_ctx, M, Nc, K, A, B, C)) return;
    if (bpg_blas_gemm(1, 0, M, Nc, K, A, B, C, BPG_BLAS_MIN_TN)) return;
    memset(C, 0, sizeof(real) * (size_t)(M * Nc));
    for (int64_t k = 0; k < K; k++) {
        const real *restrict b = B + k * Nc;
        for (int64_t i = 0; i < M; i++) {
            const real a = A[k * M + i];
            real *restrict c = C + i * Nc;
            for (int64_t j = 0; j < Nc; j++) c[j] += a * b[j];
        }
    }
}
