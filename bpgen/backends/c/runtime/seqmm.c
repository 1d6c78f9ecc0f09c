/* per-sample, per-head block products over the steps of time-major
   sequences (T steps of N rows, F = H*D columns; scores: (H*T*N, T), the
   row of query t of sample n and head j at (j*T + t)*N + n), for K
   directions at once: an argument with flag 1 holds K directions per row
   ((r*K + k) rows), with flag 0 one (read for every direction); the result
   always holds K.  K = 1: one direction.  Each sum times alpha (1, or a
   scale folded into the product: passes/fold_scale.py):
   qk:  S[(jT+t)N+n][s] = alpha sum_c A[tN+n][jD+c] B[sN+n][jD+c]
   av:  O[tN+n][jD+c]   = alpha sum_s A[(jT+t)N+n][s] B[sN+n][jD+c]
   atv: O[sN+n][jD+c]   = alpha sum_t A[(jT+t)N+n][s] B[tN+n][jD+c]
   Each (direction, head, sample) block is one strided product (the rows of
   a sample's block lie N*K rows apart): by the BLAS when large enough,
   else inline. */
#ifndef BPG_SEQMM_MIN
#define BPG_SEQMM_MIN 2048.0        /* multiply-adds of a block for the BLAS (the
                                       same as primitives/seqmm.py SEQMM_BLAS_MIN) */
#endif

/* form 0: qk, 1: av, 2: atv.  Each block C (M x Nc, rows ldc apart) =
   alpha·op(A)·op(B), inner size Kin, rows lda and ldb apart: the BLAS when large
   enough, else the loops below.  Always inlined, for blocks below the BLAS
   size with constant T and D (the emitter's choice, primitives/seqmm.py):
   the loops over 4-16 columns are then unrolled and vectorised at their
   size, where the shared copy runs them with runtime bounds (the full
   Hessian of the 6-step, 2-head, D = 4 transformer 1.9x faster). */
__attribute__((always_inline))
static inline void bpg_seqmm_unrolled(int form, int64_t N, int64_t T, int64_t H, int64_t D,
                                      int64_t K, int ka, int kb, real alpha, const real *A,
                                      const real *B, real *O)
{
    const int64_t F = H * D;
    const int64_t ma = ka ? K : 1, mb = kb ? K : 1;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < H; j++)
            for (int64_t n = 0; n < N; n++) {
                const real *Bb = B + (n * mb + k * kb) * F + j * D;  /* (T x D), rows N*mb*F apart */
                const int64_t ldb = N * mb * F;
                const real *Ab;
                real *C;
                int64_t lda, ldc, M, Nc, Kin;
                int ta, tb;
                if (form == 0) {
                    Ab = A + (n * ma + k * ka) * F + j * D;
                    lda = N * ma * F;
                    C = O + ((j * T * N + n) * K + k) * T;
                    ldc = N * K * T;
                    ta = 0, tb = 1, M = T, Nc = T, Kin = D;
                } else {
                    Ab = A + ((j * T * N + n) * ma + k * ka) * T;         /* (T x T) */
                    lda = N * ma * T;
                    C = O + (n * K + k) * F + j * D;
                    ldc = N * K * F;
                    ta = form == 2, tb = 0, M = T, Nc = D, Kin = T;
                }
                if (bpg_blas_gemm_ab(ta, tb, M, Nc, Kin, alpha, Ab, lda, Bb, ldb, 0, C, ldc,
                                     BPG_SEQMM_MIN))
                    continue;
                for (int64_t i = 0; i < M; i++) {
                    real *restrict c = C + i * ldc;
                    if (!tb) {
                        for (int64_t q = 0; q < Nc; q++) c[q] = 0;
                        for (int64_t r = 0; r < Kin; r++) {
                            const real a = alpha * (ta ? Ab[r * lda + i] : Ab[i * lda + r]);
                            const real *restrict b = Bb + r * ldb;
                            #pragma omp simd
                            for (int64_t q = 0; q < Nc; q++) c[q] += a * b[q];
                        }
                    } else {
                        for (int64_t q = 0; q < Nc; q++) {
                            const real *restrict b = Bb + q * ldb;
                            real acc = 0;
                            if (ta) {
                                for (int64_t r = 0; r < Kin; r++) acc += Ab[r * lda + i] * b[r];
                            } else {
                                const real *restrict a = Ab + i * lda;
                                #pragma omp simd reduction(+:acc)
                                for (int64_t r = 0; r < Kin; r++) acc += a[r] * b[r];
                            }
                            c[q] = alpha * acc;
                        }
                    }
                }
            }
}

/* The same, left to the compiler to inline or share (blocks for the BLAS,
   or a step count known only at run time): inlining every call site made
   the 32-step, F = 64 transformer's module compile 1.6x longer (18 -> 29 s
   of gcc) for no gain at run time. */
static inline void bpg_seqmm(int form, int64_t N, int64_t T, int64_t H, int64_t D, int64_t K,
                             int ka, int kb, real alpha, const real *A, const real *B, real *O)
{
    bpg_seqmm_unrolled(form, N, T, H, D, K, ka, kb, alpha, A, B, O);
}
