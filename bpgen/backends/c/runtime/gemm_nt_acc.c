/* C += A·Bᵀ */
static inline void bpg_gemm_nt_acc(int64_t M, int64_t Nc, int64_t K,
                                   const real *restrict A, const real *restrict B, real *restrict C)
{
    if (bpg_blas_gemm_acc(0, 1, M, Nc, K, A, B, C, BPG_BLAS_MIN_NT)) return;
    for (int64_t i = 0; i < M; i++) {
        const real *restrict a = A + i * K;
        for (int64_t j = 0; j < Nc; j++) {
            const real *restrict b = B + j * K;
            real acc = 0;
            #pragma omp simd reduction(+:acc)
            for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
            C[i * Nc + j] += acc;
        }
    }
}
