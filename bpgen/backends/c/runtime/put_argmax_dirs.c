/* bpg_put_argmax over k directions at once: sel (R x C) one value, val (R·K x 1); out (R·K x C):
   row r·K + d holds val[r·K + d] at row r's first maximum of sel, 0 elsewhere */
static inline void bpg_put_argmax_dirs(int64_t R, int64_t C, int64_t K,
                                       const real *restrict sel, const real *restrict val,
                                       real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(R * K * C));
    for (int64_t r = 0; r < R; r++) {
        const real *restrict s = sel + r * C;
        int64_t best = 0;
        real top = s[0];
        for (int64_t c = 1; c < C; c++) {
            const int gt = s[c] > top;
            best = gt ? c : best;
            top = gt ? s[c] : top;
        }
        for (int64_t d = 0; d < K; d++) out[(r * K + d) * C + best] = val[r * K + d];
    }
}
