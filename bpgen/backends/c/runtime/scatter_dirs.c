/* bpg_scatter over k directions at once (the adjoint of bpg_gather_dirs): out = 0, then
   out[n][ri][d][ci] += in[n][ro][d][co] for idx[ro·Co + co] = ri·Ci + ci,
   in the order of j = ro·Co + co (each direction's sums as bpg_scatter's) */
static inline void bpg_scatter_dirs(int64_t NB, int64_t K, int64_t Ai, int64_t Ci, int64_t Ao,
                                    int64_t Co, const int32_t *restrict idx,
                                    const real *restrict in, real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(NB * Ai * K * Ci));
    for (int64_t n = 0; n < NB; n++) {
        const real *restrict a = in + n * Ao * K * Co;
        real *restrict o = out + n * Ai * K * Ci;
        for (int64_t j = 0; j < Ao * Co; j++) {
            const int64_t ro = j / Co, co = j % Co, src = idx[j];
            if (src < 0) continue;
            const int64_t ri = src / Ci, ci = src % Ci;
            for (int64_t d = 0; d < K; d++) o[(ri * K + d) * Ci + ci] += a[(ro * K + d) * Co + co];
        }
    }
}
