/* out (R x 1): per row, val at the first maximum of the row of sel (R x C) */
__attribute__((always_inline))  /* with constant C, unrolled (not inlined: 15% of a CNN) */
static inline void bpg_take_argmax(int64_t R, int64_t C, const real *restrict sel,
                                   const real *restrict val, real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        const real *restrict s = sel + r * C;
        int64_t best = 0;
        real top = s[0];
        for (int64_t c = 1; c < C; c++) {       /* selects, not branches (cmov) */
            const int gt = s[c] > top;
            best = gt ? c : best;
            top = gt ? s[c] : top;
        }
        out[r] = val[r * C + best];
    }
}

/* max pooling in one pass: per sample n and window (c, oh, ow) of the
   C x H x W maps (k x k, stride s), out[n][(c·Ho + oh)·Wo + ow] = val at the
   window's first maximum of sel, scanned in the window's row-major order
   (the order of bpg_take_argmax over the window matrix, so the same pick) */
__attribute__((always_inline))
static inline void bpg_take_argmax_windows(int64_t N, int64_t C, int64_t H, int64_t W,
                                           int64_t k, int64_t s, const real *restrict sel,
                                           const real *restrict val, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
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
                    *out++ = val[at + best];
                }
}

/* k directions at once: sel (R x C) one value, val (R·K x C) row r's K
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

/* the windowed form over k directions: sel (NB x C·H·W) one value, val
   (NB·K x C·H·W) each sample's K directions together; out (NB·R·K x 1),
   window r of sample n in direction d at (n·R + r)·K + d */
static inline void bpg_take_argmax_windows_dirs(int64_t NB, int64_t K, int64_t C, int64_t H,
                                                int64_t W, int64_t k, int64_t s,
                                                const real *restrict sel,
                                                const real *restrict val, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
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
                        *out++ = val[(n * K + d) * C * H * W + at + best];
                }
}
