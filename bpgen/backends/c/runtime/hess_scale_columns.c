/* The structured Hessian's chain between layers: J[n] = Z[n]·diag(d1[n]),
   (N, c, u), every column scaled. */
static inline void bpg_hess_scale_columns(int64_t N, int64_t c, int64_t u,
                                          const real *restrict z, const real *restrict d1,
                                          real *restrict out)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < c; i++) {
            #pragma omp simd
            for (int64_t j = 0; j < u; j++)
                out[(n * c + i) * u + j] = z[(n * c + i) * u + j] * d1[n * u + j];
        }
}
