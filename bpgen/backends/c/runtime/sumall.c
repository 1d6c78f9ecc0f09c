/* out (1 x 1) = 1ᵀ · A · 1, accumulated in double */
static inline void bpg_sumall(int64_t R, int64_t C, const real *restrict A, real *restrict out)
{
    double acc = 0;
    for (int64_t k = 0; k < R * C; k++) acc += A[k];
    out[0] = (real)acc;
}
