/* per-sample, per-head block products over the steps of time-major
   sequences (T steps of N rows, F = H*D columns; scores: (H*T*N, T), the
   row of query t of sample n and head j at (j*T + t)*N + n), for K
   directions at once: an argument with flag 1 holds K directions per row
   ((r*K + k) rows), with flag 0 one (read for every direction); the result
   always holds K.  K = 1: one direction.
   qk:  S[(jT+t)N+n][s] = sum_c A[tN+n][jD+c] B[sN+n][jD+c]
   av:  O[tN+n][jD+c]   = sum_s A[(jT+t)N+n][s] B[sN+n][jD+c]
   atv: O[sN+n][jD+c]   = sum_t A[(jT+t)N+n][s] B[tN+n][jD+c]
   Each (direction, head, sample) block is one strided product (the rows of
   a sample's block lie N*K rows apart): by the BLAS when large enough,
   else inline. */
#ifndef BPG_SEQMM_MIN
#define BPG_SEQMM_MIN 2048.0        /* multiply-adds of a block for the BLAS */
#endif

/* C (M x Nc, rows ldc apart) = op(A)·op(B), K inner, rows lda and ldb apart */
static inline void bpg_seqmm_block(int ta, int tb, int64_t M, int64_t Nc, int64_t K,
                                   const real *A, int64_t lda, const real *B, int64_t ldb,
                                   real *C, int64_t ldc)
{
    if (bpg_blas_gemm_ld(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc, BPG_SEQMM_MIN)) return;
    for (int64_t i = 0; i < M; i++) {
        real *restrict c = C + i * ldc;
        if (!tb) {
            for (int64_t j = 0; j < Nc; j++) c[j] = 0;
            for (int64_t k = 0; k < K; k++) {
                const real a = ta ? A[k * lda + i] : A[i * lda + k];
                const real *restrict b = B + k * ldb;
                #pragma omp simd
                for (int64_t j = 0; j < Nc; j++) c[j] += a * b[j];
            }
        } else {
            for (int64_t j = 0; j < Nc; j++) {
                const real *restrict b = B + j * ldb;
                real acc = 0;
                if (ta) {
                    for (int64_t k = 0; k < K; k++) acc += A[k * lda + i] * b[k];
                } else {
                    const real *restrict a = A + i * lda;
                    #pragma omp simd reduction(+:acc)
                    for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
                }
                c[j] = acc;
            }
        }
    }
}

/* form 0: qk, 1: av, 2: atv */
static inline void bpg_seqmm(int form, int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                             int ka, int kb, const real *A, const real *B, real *O)
{
    const int64_t F = H * D;
    const int64_t ma = ka ? K : 1, mb = kb ? K : 1;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < H; j++)
            for (int64_t n = 0; n < N; n++) {
                const real *b = B + (n * mb + k * kb) * F + j * D;   /* (T x D), rows N*mb*F apart */
                if (form == 0) {
                    const real *a = A + (n * ma + k * ka) * F + j * D;
                    bpg_seqmm_block(0, 1, T, T, D, a, N * ma * F, b, N * mb * F,
                                    O + ((j * T * N + n) * K + k) * T, N * K * T);
                } else {
                    const real *a = A + ((j * T * N + n) * ma + k * ka) * T;  /* (T x T) */
                    bpg_seqmm_block(form == 2, 0, T, D, T, a, N * ma * T, b, N * mb * F,
                                    O + (n * K + k) * F + j * D, N * K * F);
                }
            }
}

static inline void bpg_seqmm_qk(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                int ka, int kb, const real *A, const real *B, real *S)
{
    bpg_seqmm(0, N, T, H, D, K, ka, kb, A, B, S);
}

static inline void bpg_seqmm_av(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                int ka, int kb, const real *A, const real *B, real *O)
{
    bpg_seqmm(1, N, T, H, D, K, ka, kb, A, B, O);
}

static inline void bpg_seqmm_atv(int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                                 int ka, int kb, const real *A, const real *B, real *O)
{
    bpg_seqmm(2, N, T, H, D, K, ka, kb, A, B, O);
}
