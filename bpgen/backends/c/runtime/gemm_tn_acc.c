/* C += Aᵀ·B */
static inline void bpg_gemm_tn_acc(int64_t M, int64_t Nc, int64_t K,
                                   const real *restrict A, const real *restrict B, real *restrict C)
{
    if (bpg_blas_gemm_acc(1, 0, M, Nc, K, A, B, C, BPG_BLAS_MIN_TN)) return;
    for (int64_t k = 0; k < K; k++) {
        const real *restrict b = B + k * Nc;
        for (int64_t i = 0; i < M; i++) {
            const real a = A[k * M + i];
            real *restrict c = C + i * Nc;
            for (int64_t j = 0; j < Nc; j++) c[j] += a * b[j];
        }
    }
}
