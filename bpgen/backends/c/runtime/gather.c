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

/* k directions at once (hessian_columns' tangent part): every variable
   stored (rows, K, cols), so sample n's block of A rows x C columns holds
   each row's K directions: out[n][ro][d][co] = in[n][ri][d][ci] for
   idx[ro·Co + co] = ri·Ci + ci (0 where it is -1) */
static inline void bpg_gather_dirs(int64_t NB, int64_t K, int64_t Ai, int64_t Ci, int64_t Ao,
                                   int64_t Co, const int32_t *restrict idx,
                                   const real *restrict in, real *restrict out)
{
    for (int64_t n = 0; n < NB; n++) {
        const real *restrict a = in + n * Ai * K * Ci;
        real *restrict o = out + n * Ao * K * Co;
        for (int64_t j = 0; j < Ao * Co; j++) {
            const int64_t ro = j / Co, co = j % Co, src = idx[j];
            if (src < 0) {
                for (int64_t d = 0; d < K; d++) o[(ro * K + d) * Co + co] = 0;
                continue;
            }
            const int64_t ri = src / Ci, ci = src % Ci;
            for (int64_t d = 0; d < K; d++) o[(ro * K + d) * Co + co] = a[(ri * K + d) * Ci + ci];
        }
    }
}
