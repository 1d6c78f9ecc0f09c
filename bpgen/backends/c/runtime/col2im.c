/* the adjoint of bpg_im2col (col2im, the scatter of ("im2col", C, H, W, k,
   s, p)): per sample, every patch entry added to the pixel it was read
   from, in the order of the patches (the order of bpg_scatter with the
   pattern's table, so the same sums); with padding, into a zero-bordered
   image of at most BPG_PADDED_MAX entries on the stack whose border is then
   dropped (larger padded images: border tests) */
#ifndef BPG_PADDED_MAX
#define BPG_PADDED_MAX 4096
#endif
__attribute__((always_inline))
static inline void bpg_col2im(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k,
                              int64_t s, int64_t p, const real *restrict in, real *restrict out)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
    const int64_t Ho = (Hp - k) / s + 1, Wo = (Wp - k) / s + 1;
    const int copy = p && C * Hp * Wp <= BPG_PADDED_MAX;
    real padded[copy ? C * Hp * Wp : 1];
    if (!copy) memset(out, 0, sizeof(real) * (size_t)(N * C * H * W));
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * Ho * Wo * C * k * k;
        real *restrict img = out + n * C * H * W;
        real *restrict o = copy ? padded : img;
        const int64_t ih = copy ? Hp : H, iw = copy ? Wp : W;
        if (copy) memset(padded, 0, sizeof(padded));
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t u = 0; u < k; u++, a += k) {
                        if (!p || copy) {
                            real *restrict r = o + c * ih * iw + (oh * s + u) * iw + ow * s;
                            for (int64_t v = 0; v < k; v++) r[v] += a[v];
                            continue;
                        }
                        const int64_t row = oh * s + u - p;
                        if (row < 0 || row >= H) continue;
                        for (int64_t v = 0; v < k; v++) {
                            const int64_t col = ow * s + v - p;
                            if (col >= 0 && col < W) img[c * H * W + row * W + col] += a[v];
                        }
                    }
        if (copy)
            for (int64_t c = 0; c < C; c++)
                for (int64_t h = 0; h < H; h++)
                    memcpy(img + c * H * W + h * W, padded + c * Hp * Wp + (h + p) * Wp + p,
                           sizeof(real) * (size_t)W);
    }
}
