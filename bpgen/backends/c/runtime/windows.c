/* the gather ("windows", C, H, W, k, s) of patterns.py without its table:
   per sample n, one row per window (c, oh, ow), columns (u, v),
   out[n][c][oh][ow][u][v] = in[n][c][oh·s + u][ow·s + v] */
__attribute__((always_inline))
static inline void bpg_windows(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                               int64_t s, const real *restrict in, real *restrict out)
{
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * C * H * W;
        real *restrict o = out + n * C * Ho * Wo * k * k;
        for (int64_t c = 0; c < C; c++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++)
                    for (int64_t u = 0; u < k; u++, o += k)
                        for (int64_t v = 0; v < k; v++)
                            o[v] = a[c * H * W + (oh * s + u) * W + ow * s + v];
    }
}
