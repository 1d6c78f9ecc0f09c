/* out (1 x C) = 1ᵀ · A: column sums */
static inline void bpg_colsum(int64_t R, int64_t C, const real *restrict A, real *restrict out)
{
    for (int64_t c = 0; c < C; c++) out[c] = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) out[c] += A[r * C + c];
}
