/* put_argmax over pooling windows, the adjoint of bpg_take_argmax_windows: out = 0, then
   per window, val added to the maps' entry at the window's first maximum
   of sel (a pass of zeros and one store per window: storing each window's
   k x k entries instead, val or 0 by a select, measured 5x slower on
   LeNet's 6 x 24 x 24 maps).  The arg-max is kept by a mask, not a select:
   GCC made the select a branch here (not in bpg_take_argmax_windows), which
   the maps' data mispredict (LeNet's first maps: 194-239 -> 118-119 us) */
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
                            const int64_t gt = -(int64_t)(m[u * W + v] > top);
                            best ^= (best ^ (u * W + v)) & gt;
                            top = m[u * W + v] > top ? m[u * W + v] : top;
                        }
                    out[at + best] += *val++;
                }
}
