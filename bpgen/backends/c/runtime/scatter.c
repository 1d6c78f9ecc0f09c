/* the adjoint of bpg_gather (col2im): per sample n, out[n] = 0, then
   out[n][idx[j]] += in[n][j] for idx[j] >= 0 */
static inline void bpg_scatter(int64_t N, int64_t S_out, int64_t S_in, const int32_t *restrict idx,
                               const real *restrict in, real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(N * S_out));
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * S_in;
        real *restrict o = out + n * S_out;
        for (int64_t j = 0; j < S_in; j++)
            if (idx[j] >= 0) o[idx[j]] += a[j];
    }
}
