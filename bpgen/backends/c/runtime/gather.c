/* per sample n: out[n][j] = in[n][idx[j]] (0 where idx[j] < 0); blocks of
   S_in and S_out entries (im2col, pooling windows, reordering) */
static inline void bpg_gather(int64_t N, int64_t S_in, int64_t S_out, const int32_t *restrict idx,
                              const real *restrict in, real *restrict out)
{
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * S_in;
        real *restrict o = out + n * S_out;
        for (int64_t j = 0; j < S_out; j++) o[j] = idx[j] >= 0 ? a[idx[j]] : 0;
    }
}
