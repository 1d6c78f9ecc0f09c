/* out (R x 1) = the maximum of each row */
static inline void bpg_rowmax(int64_t R, int64_t C, const real *restrict A, real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        real m = A[r * C];
        for (int64_t c = 1; c < C; c++) m = A[r * C + c] > m ? A[r * C + c] : m;
        out[r] = m;
    }
}
