/* bpg_take_argmax_windows over k directions at once: sel (NB x C·H·W) one value, val
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
