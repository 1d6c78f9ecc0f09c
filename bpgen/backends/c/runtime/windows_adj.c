/* the adjoint of bpg_windows: each window entry added back to the pixel it was read from,
   in the windows' order.  Windows that tile the map exactly (s = k, H and W
   multiples of k) read every pixel once: then a plain store, no zeroing */
__attribute__((always_inline))
static inline void bpg_windows_adj(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                                   int64_t s, const real *restrict in, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    const int tiled = s == k && Ho * k == H && Wo * k == W;
    if (!tiled) memset(out, 0, sizeof(real) * (size_t)(N * C * H * W));
    for (int64_t n = 0; n < N; n++) {
        real *restrict o = out + n * C * H * W;
        const real *restrict a = in + n * C * Ho * Wo * k * k;
        for (int64_t c = 0; c < C; c++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++)
                    for (int64_t u = 0; u < k; u++, a += k)
                        for (int64_t v = 0; v < k; v++) {
                            real *const t = o + c * H * W + (oh * s + u) * W + ow * s + v;
                            if (tiled) *t = a[v]; else *t += a[v];
                        }
    }
}
