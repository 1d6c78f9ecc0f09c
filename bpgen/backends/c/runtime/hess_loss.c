/* The structured Hessian: Λ_out[n] = (diag(p) - pᵀ·p) / N (softmax, p = src)
   or diag(src) / N (elementwise losses), (N, K, K). */
static inline void bpg_hess_loss(int64_t N, int64_t K, const real *restrict src, int softmax,
                          real *restrict out)
{
    const real inv = (real)1 / (real)N;
    for (int64_t n = 0; n < N; n++) {
        const real *restrict p = src + n * K;
        real *restrict o = out + n * K * K;
        for (int64_t i = 0; i < K; i++) {
            for (int64_t j = 0; j < K; j++) o[i * K + j] = softmax ? -p[i] * p[j] * inv : 0;
            o[i * K + i] += p[i] * inv;
        }
    }
}
