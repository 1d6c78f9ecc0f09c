/* The structured Hessian: A[n] = D·A[n]·D + diag(d2 ⊙ q) in place, D =
   diag(d1[n]), A (N, u, u); each pair (i, j), (j, i) set to their mean, so
   that A is symmetric to the last bit. */
static inline void bpg_hess_scale(int64_t N, int64_t u, const real *restrict d1,
                                  const real *restrict d2, const real *restrict q,
                                  real *restrict A)
{
    for (int64_t n = 0; n < N; n++) {
        real *restrict a = A + n * u * u;
        const real *restrict d = d1 + n * u;
        for (int64_t i = 0; i < u; i++) {
            a[i * u + i] = d[i] * a[i * u + i] * d[i] + d2[n * u + i] * q[n * u + i];
            for (int64_t j = i + 1; j < u; j++) {
                const real s = (d[i] * a[i * u + j] * d[j] + d[j] * a[j * u + i] * d[i]) / 2;
                a[i * u + j] = s;
                a[j * u + i] = s;
            }
        }
    }
}
