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
