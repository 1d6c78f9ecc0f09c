/* bpg_take_argmax over k directions at once: sel (R x C) one value, val (R·K x C) row r's K
   directions together; out[r·K + d] = val[r·K + d] at row r's first
   maximum of sel */
static inline void bpg_take_argmax_dirs(int64_t R, int64_t C, int64_t K,
                                        const real *restrict sel, const real *restrict val,
                                        real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        const real *restrict s = sel + r * C;
        int64_t best = 0;
        real top = s[0];
        for (int64_t c = 1; c < C; c++) {
            const int gt = s[c] > top;
            best = gt ? c : best;
            top = gt ? s[c] : top;
        }
        for (int64_t d = 0; d < K; d++) out[r * K + d] = val[(r * K + d) * C + best];
    }
}
