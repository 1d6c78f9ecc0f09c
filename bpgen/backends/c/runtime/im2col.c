/* the gather ("im2col", C, H, W, k, s, p) of patterns.py without its table:
   per sample n, one row per output pixel (oh, ow), columns (c, u, v),
   out[n][oh][ow][c][u][v] = in[n][c][oh·s + u - p][ow·s + v - p], 0 in the
   padding.  Sizes are constants at every call, so the loops unroll; a row
   of k entries is contiguous in both blocks (no index table to read).  With
   padding, each sample is first copied into a zero-bordered image of
   C x (H + 2p) x (W + 2p) entries (at most BPG_PADDED_MAX, on the stack;
   gather.py prints the table's gather for larger ones, which are still
   right here, by border tests), so that no row of a patch is cut */
#ifndef BPG_PADDED_MAX
#define BPG_PADDED_MAX 4096
#endif
__attribute__((always_inline))
static inline void bpg_im2col(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
    const int64_t Ho = (Hp - k) / s + 1, Wo = (Wp - k) / s + 1;
    const int copy = p && C * Hp * Wp <= BPG_PADDED_MAX;
    real padded[copy ? C * Hp * Wp : 1];
    if (copy) memset(padded, 0, sizeof(padded));
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * C * H * W;
        real *restrict o = out + n * Ho * Wo * C * k * k;
        if (copy)
            for (int64_t c = 0; c < C; c++)
                for (int64_t h = 0; h < H; h++)
                    memcpy(padded + c * Hp * Wp + (h + p) * Wp + p, a + c * H * W + h * W,
                           sizeof(real) * (size_t)W);
        /* the image read without border tests: unpadded, or its padded copy */
        const real *restrict img = copy ? padded : a;
        const int64_t ih = copy ? Hp : H, iw = copy ? Wp : W, off = copy ? 0 : p;
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t u = 0; u < k; u++, o += k) {
                        if (!p || copy) {
                            const real *restrict r = img + c * ih * iw + (oh * s + u) * iw
                                                     + ow * s;
                            for (int64_t v = 0; v < k; v++) o[v] = r[v];
                            continue;
                        }
                        const int64_t row = oh * s + u - off;
                        for (int64_t v = 0; v < k; v++) {
                            const int64_t col = ow * s + v - off;
                            o[v] = (row >= 0 && row < H && col >= 0 && col < W)
                                   ? a[c * H * W + row * W + col] : 0;
                        }
                    }
    }
}
