/* The structured Hessian: B[n] = A[n]ᵀ for every sample, A (N, r, c). */
static inline void bpg_hess_transpose(int64_t N, int64_t r, int64_t c, const real *restrict A,
                                      real *restrict B)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) B[(n * c + j) * r + i] = A[(n * r + i) * c + j];
}
