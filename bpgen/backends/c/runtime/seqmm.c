/* per-sample, per-head block products over the steps of time-major
   sequences (T steps of N rows, F = H*D columns; scores: (H*T*N, T), the
   row of query t of sample n and head j at (j*T + t)*N + n), for K
   directions at once: an argument with flag 1 holds K directions per row
   ((r*K + k) rows), with flag 0 one (read for every direction); the result
   always holds K.  K = 1: one direction.
   qk:  S[(jT+t)N+n][s] = sum_c A[tN+n][jD+c] B[sN+n][jD+c]
   av:  O[tN+n][jD+c]   = sum_s A[(jT+t)N+n][s] B[sN+n][jD+c]
   atv: O[sN+n][jD+c]   = sum_t A[(jT+t)N+n][s] B[tN+n][jD+c] */
#define BPG_SEQ_ROW(r, f) ((r) * ((f) ? K : 1) + ((f) ? k : 0))

static inline void bpg_seqmm_qk(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                int ka, int kb, const real *restrict A,
                                const real *restrict B, real *restrict S)
{
    const int64_t F = H * D;
    for (int64_t j = 0; j < H; j++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < K; k++) {
                    const real *restrict a = A + BPG_SEQ_ROW(t * N + n, ka) * F + j * D;
                    real *restrict o = S + (((j * T + t) * N + n) * K + k) * T;
                    for (int64_t s = 0; s < T; s++) {
                        const real *restrict b = B + BPG_SEQ_ROW(s * N + n, kb) * F + j * D;
                        real acc = 0;
                        #pragma omp simd reduction(+:acc)
                        for (int64_t c = 0; c < D; c++) acc += a[c] * b[c];
                        o[s] = acc;
                    }
                }
}

static inline void bpg_seqmm_av(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                int ka, int kb, const real *restrict A,
                                const real *restrict B, real *restrict O)
{
    const int64_t F = H * D;
    for (int64_t j = 0; j < H; j++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < K; k++) {
                    const real *restrict a = A + BPG_SEQ_ROW((j * T + t) * N + n, ka) * T;
                    real *restrict o = O + ((t * N + n) * K + k) * F + j * D;
                    for (int64_t c = 0; c < D; c++) o[c] = 0;
                    for (int64_t s = 0; s < T; s++) {
                        const real *restrict b = B + BPG_SEQ_ROW(s * N + n, kb) * F + j * D;
                        #pragma omp simd
                        for (int64_t c = 0; c < D; c++) o[c] += a[s] * b[c];
                    }
                }
}

static inline void bpg_seqmm_atv(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                 int ka, int kb, const real *restrict A,
                                 const real *restrict B, real *restrict O)
{
    const int64_t F = H * D;
    for (int64_t j = 0; j < H; j++)
        for (int64_t s = 0; s < T; s++)
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < K; k++) {
                    real *restrict o = O + ((s * N + n) * K + k) * F + j * D;
                    for (int64_t c = 0; c < D; c++) o[c] = 0;
                    for (int64_t t = 0; t < T; t++) {
                        const real w = A[BPG_SEQ_ROW((j * T + t) * N + n, ka) * T + s];
                        const real *restrict b = B + BPG_SEQ_ROW(t * N + n, kb) * F + j * D;
                        #pragma omp simd
                        for (int64_t c = 0; c < D; c++) o[c] += w * b[c];
                    }
                }
}

#undef BPG_SEQ_ROW
