/* C += A·B (the same product added into C: a map's other terms, or other
   products, were written there first) */
static inline void bpg_gemm_nn_acc(int64_t M, int64_t Nc, int64_t K,
                                   const real *restrict A, const real *restrict B, real *restrict C)
{
    if (bpg_blas_gemm_acc(0, 0, M, Nc, K, A, B, C, BPG_BLAS_MIN_NN)) return;
    for (int64_t i = 0; i < M; i++) {
        real *restrict c = C + i * Nc;
        for (int64_t k = 0; k < K; k++) {
            const real a = A[i * K + k];
            const real *restrict b = B + k * Nc;
            for (int64_t j = 0; j < Nc; j++) c[j] += a * b[j];
        }
    }
}
