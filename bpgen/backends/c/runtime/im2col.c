/* the gather ("im2col", C, H, W, k, s, p) of patterns.py without its table:
   per sample n, one row per output pixel (oh, ow), columns (c, u, v),
   out[n][oh][ow][c][u][v] = in[n][c][oh·s + u - p][ow·s + v - p], 0 in the
   padding.  Sizes are constants at every call, so the loops unroll; a row
   of k entries is contiguous in both blocks (no index table to read) */
__attribute__((always_inline))
static inline void bpg_im2col(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * C * H * W;
        real *restrict o = out + n * Ho * Wo * C * k * k;
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                /* the patch's columns in the image: v in [vlo, vhi) */
                const int64_t col0 = ow * s - p;
                const int64_t vlo = col0 < 0 ? -col0 : 0, vhi = col0 + k > W ? W - col0 : k;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t u = 0; u < k; u++, o += k) {
                        const int64_t row = oh * s + u - p;
                        if (row < 0 || row >= H) {
                            for (int64_t v = 0; v < k; v++) o[v] = 0;
                            continue;
                        }
                        const real *restrict r = a + c * H * W + row * W;
                        for (int64_t v = 0; v < vlo; v++) o[v] = 0;
                        for (int64_t v = vlo; v < vhi; v++) o[v] = r[col0 + v];
                        for (int64_t v = vhi; v < k; v++) o[v] = 0;
                    }
            }
    }
}

/* its adjoint (col2im): per sample, out[n] = 0, then every patch entry
   added to the pixel it was read from, in the order of the patches (the
   order of bpg_scatter with the pattern's table: the same sums) */
__attribute__((always_inline))
static inline void bpg_col2im(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    memset(out, 0, sizeof(real) * (size_t)(N * C * H * W));
    for (int64_t n = 0; n < N; n++) {
        real *restrict o = out + n * C * H * W;
        const real *restrict a = in + n * Ho * Wo * C * k * k;
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                const int64_t col0 = ow * s - p;
                const int64_t vlo = col0 < 0 ? -col0 : 0, vhi = col0 + k > W ? W - col0 : k;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t u = 0; u < k; u++, a += k) {
                        const int64_t row = oh * s + u - p;
                        if (row < 0 || row >= H) continue;
                        real *restrict r = o + c * H * W + row * W;
                        for (int64_t v = vlo; v < vhi; v++) r[col0 + v] += a[v];
                    }
            }
    }
}
