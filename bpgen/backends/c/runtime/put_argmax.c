/* out (R x C): per row, val[r] (R x 1) at the first maximum of the row of sel, 0 elsewhere */
__attribute__((always_inline))  /* with constant C, unrolled (not inlined: 15% of a CNN) */
static inline void bpg_put_argmax(int64_t R, int64_t C, const real *restrict sel,
                                  const real *restrict val, real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(R * C));
    for (int64_t r = 0; r < R; r++) {
        const real *restrict s = sel + r * C;
        int64_t best = 0;
        real top = s[0];
        for (int64_t c = 1; c < C; c++) {       /* selects, not branches (cmov) */
            const int gt = s[c] > top;
            best = gt ? c : best;
            top = gt ? s[c] : top;
        }
        out[r * C + best] = val[r];
    }
}

/* its windowed form, the adjoint of bpg_take_argmax_windows: out = 0, then
   per window, val added to the maps' entry at the window's first maximum
   of sel (a pass of zeros and one store per window: storing each window's
   k x k entries instead, val or 0 by a select, measured 5x slower on
   LeNet's 6 x 24 x 24 maps) */
__attribute__((always_inline))
static inline void bpg_put_argmax_windows(int64_t N, int64_t C, int64_t H, int64_t W,
                                          int64_t k, int64_t s, const real *restrict sel,
                                          const real *restrict val, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    memset(out, 0, sizeof(real) * (size_t)(N * C * H * W));
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const int64_t at = n * C * H * W + c * H * W + oh * s * W + ow * s;
                    const real *restrict m = sel + at;
                    int64_t best = 0;
                    real top = m[0];
                    for (int64_t u = 0; u < k; u++)
                        for (int64_t v = 0; v < k; v++) {
                            const int gt = m[u * W + v] > top;
                            best = gt ? u * W + v : best;
                            top = gt ? m[u * W + v] : top;
                        }
                    out[at + best] += *val++;
                }
}

/* k directions at once: sel (R x C) one value, val (R·K x 1); out (R·K x C):
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

/* the windowed form over k directions (the adjoint of
   bpg_take_argmax_windows_dirs): out (NB·K x C·H·W) = 0, then each window's
   value in direction d added at the window's first maximum of sel */
static inline void bpg_put_argmax_windows_dirs(int64_t NB, int64_t K, int64_t C, int64_t H,
                                               int64_t W, int64_t k, int64_t s,
                                               const real *restrict sel,
                                               const real *restrict val, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    memset(out, 0, sizeof(real) * (size_t)(NB * K * C * H * W));
    for (int64_t n = 0; n < NB; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const int64_t at = c * H * W + oh * s * W + ow * s;
                    const real *restrict m = sel + n * C * H * W + at;
                    int64_t best = 0;
                    real top = m[0];
                    for (int64_t u = 0; u < k; u++)
                        for (int64_t v = 0; v < k; v++) {
                            const int gt = m[u * W + v] > top;
                            best = gt ? u * W + v : best;
                            top = gt ? m[u * W + v] : top;
                        }
                    for (int64_t d = 0; d < K; d++)
                        out[(n * K + d) * C * H * W + at + best] += *val++;
                }
}
