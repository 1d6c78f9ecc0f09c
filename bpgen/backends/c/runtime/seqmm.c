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
#define BPG_SEQMM_MIN 2048.0        /* multiply-adds of a block for the BLAS (the
                                       same as primitives/seqmm.py SEQMM_BLAS_MIN) */
#endif

/* form 0: qk, 1: av, 2: atv.  Each (direction, head, sample) block is made
   by the BLAS when it has at least BPG_SEQMM_MIN multiply-adds, else by
   loops.  tri (passes/triangles.py: under a causal mask): only the lower
   triangle of the (T x T) scores, s <= t, counts: qk makes it and writes
   0 above it; av and atv read it only (their scores are 0 above it).  A
   block made by loops is then made row by row over the triangle; a BLAS
   block stays whole (made in panels of 16 or 8 rows over the triangle,
   the 32-step transformer's 384 blocks of 32 x 32 x 16 took as long or
   1.05x longer: the BLAS's cost per call outweighs the work left out).
   Always inlined, for blocks below the BLAS size with constant T and D
   (the emitter's choice, primitives/seqmm.py): the loops over 4-16
   columns are then unrolled and vectorised at their size, where the
   shared copy runs them with runtime bounds (the full Hessian of the
   6-step, 2-head, D = 4 transformer 1.9x faster). */
__attribute__((always_inline))
static inline void bpg_seqmm_unrolled(int form, int64_t N, int64_t T, int64_t H, int64_t D,
                                      int64_t K, int ka, int kb, const real *A, const real *B,
                                      real *O, int tri)
{
    const int64_t F = H * D;
    const int64_t ma = ka ? K : 1, mb = kb ? K : 1;
    const int blas = (double)T * T * D >= BPG_SEQMM_MIN;
    const int64_t panel = tri && !blas ? 1 : T;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < H; j++)
            for (int64_t n = 0; n < N; n++)
                for (int64_t i0 = 0; i0 < T; i0 += panel) {  /* rows i0 .. i1-1 of the block */
                    const int64_t i1 = i0 + panel < T ? i0 + panel : T;
                    /* its part C (M x Nc, rows ldc apart) = op(A)·op(B), inner size Kin */
                    const real *Ab, *Bb = B + (n * mb + k * kb) * F + j * D;  /* (T x D) */
                    int64_t ldb = N * mb * F, lda, ldc, M = i1 - i0, Nc, Kin;
                    real *C;
                    int ta, tb;
                    if (form == 0) {        /* rows i0.., keys s < i1 (tri) */
                        Ab = A + (n * ma + k * ka) * F + j * D + i0 * N * ma * F;
                        lda = N * ma * F;
                        ldc = N * K * T;
                        C = O + ((j * T * N + n) * K + k) * T + i0 * ldc;
                        ta = 0, tb = 1, Nc = tri ? i1 : T, Kin = D;
                    } else {                /* A: the (T x T) scores */
                        const int64_t t0 = form == 2 && tri ? i0 : 0;
                        lda = N * ma * T;
                        ldc = N * K * F;
                        Ab = A + ((j * T * N + n) * ma + k * ka) * T;
                        C = O + (n * K + k) * F + j * D + i0 * ldc;
                        ta = form == 2, tb = 0, Nc = D;
                        if (form == 1) {    /* O[t] = sum over s (s <= t: tri) of A[t][s] B[s] */
                            Ab += i0 * lda;
                            Kin = tri ? i1 : T;
                        } else {            /* O[s] = sum over t (t >= s: tri) of A[t][s] B[t] */
                            Ab += t0 * lda + i0;
                            Bb += t0 * ldb;
                            Kin = T - t0;
                        }
                    }
                    if (form == 0)          /* above the panel's keys: 0 */
                        for (int64_t i = 0; i < M; i++)
                            for (int64_t q = Nc; q < T; q++) C[i * ldc + q] = 0;
                    if (blas && bpg_blas_gemm_ld(ta, tb, M, Nc, Kin, Ab, lda, Bb, ldb, C, ldc, 0))
                        continue;
                    for (int64_t i = 0; i < M; i++) {
                        real *restrict c = C + i * ldc;
                        if (!tb) {
                            for (int64_t q = 0; q < Nc; q++) c[q] = 0;
                            for (int64_t r = 0; r < Kin; r++) {
                                const real a = ta ? Ab[r * lda + i] : Ab[i * lda + r];
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
                                c[q] = acc;
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
                             int ka, int kb, const real *A, const real *B, real *O, int tri)
{
    bpg_seqmm_unrolled(form, N, T, H, D, K, ka, kb, A, B, O, tri);
}
