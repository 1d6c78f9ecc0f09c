/* the adjoint of bpg_take_rows: out (V rows of w) = 0, then out[idx[r]] += a[r]
   (idx NULL: out[r / n] += a[r]) for every row r of a (R rows of w) */
static inline void bpg_add_rows(int64_t R, int64_t V, int64_t w, int64_t n,
                                const int64_t *restrict idx, const real *restrict a,
                                real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(V * w));
    for (int64_t r = 0; r < R; r++) {
        real *restrict o = out + (idx ? idx[r] : r / n) * w;
        const real *restrict s = a + r * w;
        for (int64_t j = 0; j < w; j++) o[j] += s[j];
    }
}
