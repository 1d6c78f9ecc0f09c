/* out (R x 1) = A · 1: row sums, accumulated in double */
static inline void bpg_rowsum(int64_t R, int64_t C, const real *restrict A, real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        double acc = 0;
        for (int64_t c = 0; c < C; c++) acc += A[r * C + c];
        out[r] = (real)acc;
    }
}
