/* The structured Hessian: C[n] = A[n]·B[n] for every sample, A (N, m, k),
   B (N, k, nc).  Calls bpg_gemm_nn (pasted before this file). */
static void bpg_hess_bmm(int64_t N, int64_t m, int64_t nc, int64_t k, const real *restrict A,
                         const real *restrict B, real *restrict C)
{
    for (int64_t n = 0; n < N; n++)
        bpg_gemm_nn(m, nc, k, A + n * m * k, B + n * k * nc, C + n * m * nc);
}
