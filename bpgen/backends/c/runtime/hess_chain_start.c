/* The structured Hessian's chain between layers starts at J[n] = diag(d1[n]),
   (N, u, u). */
static inline void bpg_hess_chain_start(int64_t N, int64_t u, const real *restrict d1,
                                        real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(N * u * u));
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < u; i++) out[n * u * u + i * u + i] = d1[n * u + i];
}
