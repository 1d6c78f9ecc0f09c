/* the gather ("im2col", C, H, W, k, s, p) of patterns.py without its table:
   per sample n, one row per output pixel (oh, ow), columns (c, u, v),
   out[n][oh][ow][c][u][v] = in[n][c][oh·s + u - p][ow·s + v - p], 0 in the
   padding.  Sizes are constants at every call, so the loops unroll; a row
   of k entries is contiguous in both blocks (no index table to read).  With
   padding, each sample is first copied into a zero-bordered image of
   C x (H + 2p) x (W + 2p) entries (at most BPG_PADDED_MAX, on the stack;
   gather.py prints the table's gather for larger ones), so that no row of
   a patch is cut by the border */
#define BPG_PADDED_MAX 4096

/* the patches of one C x Hp x Wp image with no padding */
__attribute__((always_inline))
static inline void bpg_patches(int64_t C, int64_t Hp, int64_t Wp, int64_t k, int64_t s,
                               int64_t Ho, int64_t Wo, const real *restrict a,
                               real *restrict o)
{
    for (int64_t oh = 0; oh < Ho; oh++)
        for (int64_t ow = 0; ow < Wo; ow++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t u = 0; u < k; u++, o += k) {
                    const real *restrict r = a + c * Hp * Wp + (oh * s + u) * Wp + ow * s;
                    for (int64_t v = 0; v < k; v++) o[v] = r[v];
                }
}

__attribute__((always_inline))
static inline void bpg_im2col(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
    const int64_t Ho = (Hp - k) / s + 1, Wo = (Wp - k) / s + 1;
    real padded[p && C * Hp * Wp <= BPG_PADDED_MAX ? C * Hp * Wp : 1];
    if (p) memset(padded, 0, sizeof(padded));
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * C * H * W;
        real *restrict o = out + n * Ho * Wo * C * k * k;
        if (!p) {
            bpg_patches(C, H, W, k, s, Ho, Wo, a, o);
        } else if (C * Hp * Wp <= BPG_PADDED_MAX) {
            for (int64_t c = 0; c < C; c++)
                for (int64_t h = 0; h < H; h++)
                    memcpy(padded + c * Hp * Wp + (h + p) * Wp + p, a + c * H * W + h * W,
                           sizeof(real) * (size_t)W);
            bpg_patches(C, Hp, Wp, k, s, Ho, Wo, padded, o);
        } else {        /* large padded images (not printed; kept correct) */
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++)
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t u = 0; u < k; u++, o += k) {
                            const int64_t row = oh * s + u - p;
                            for (int64_t v = 0; v < k; v++) {
                                const int64_t col = ow * s + v - p;
                                o[v] = (row >= 0 && row < H && col >= 0 && col < W)
                                       ? a[c * H * W + row * W + col] : 0;
                            }
                        }
        }
    }
}

/* its adjoint (col2im): per sample, every patch entry added to the pixel
   it was read from, in the order of the patches (the order of bpg_scatter
   with the pattern's table, so the same sums); with padding, into the
   zero-bordered image (its border then dropped) */
__attribute__((always_inline))
static inline void bpg_col2im(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
    const int64_t Ho = (Hp - k) / s + 1, Wo = (Wp - k) / s + 1;
    const int small = C * Hp * Wp <= BPG_PADDED_MAX;
    real padded[p && small ? C * Hp * Wp : 1];
    if (!p || !small) memset(out, 0, sizeof(real) * (size_t)(N * C * H * W));
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * Ho * Wo * C * k * k;
        real *restrict img = out + n * C * H * W;
        if (p && !small) {      /* large padded images (not printed; kept correct) */
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++)
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t u = 0; u < k; u++, a += k) {
                            const int64_t row = oh * s + u - p;
                            for (int64_t v = 0; v < k; v++) {
                                const int64_t col = ow * s + v - p;
                                if (row >= 0 && row < H && col >= 0 && col < W)
                                    img[c * H * W + row * W + col] += a[v];
                            }
                        }
            continue;
        }
        real *restrict o = p ? padded : img;
        if (p) memset(padded, 0, sizeof(padded));
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t u = 0; u < k; u++, a += k) {
                        real *restrict r = o + c * Hp * Wp + (oh * s + u) * Wp + ow * s;
                        for (int64_t v = 0; v < k; v++) r[v] += a[v];
                    }
        if (p)
            for (int64_t c = 0; c < C; c++)
                for (int64_t h = 0; h < H; h++)
                    memcpy(img + c * H * W + h * W, padded + c * Hp * Wp + (h + p) * Wp + p,
                           sizeof(real) * (size_t)W);
    }
}
