/* bpg_gather over k directions at once (hessian_columns' tangent part): every variable
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
