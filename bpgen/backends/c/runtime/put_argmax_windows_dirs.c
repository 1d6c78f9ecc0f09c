/* bpg_put_argmax_windows over k directions at once (the adjoint of
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
