/* out[r] = table[idx[r]] (idx NULL: table[r / n], the step of row r of a
   time-major sequence of n samples); rows of w entries */
static inline void bpg_take_rows(int64_t R, int64_t w, int64_t n, const int64_t *restrict idx,
                                 const real *restrict table, real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        const real *restrict a = table + (idx ? idx[r] : r / n) * w;
        real *restrict o = out + r * w;
        for (int64_t j = 0; j < w; j++) o[j] = a[j];
    }
}
