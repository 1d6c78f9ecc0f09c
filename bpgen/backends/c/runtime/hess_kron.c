/* The structured Hessian: one block between layers k < l, written into H
   (row stride ld) at its first entry:
       H[(p,q), (i,j)] = Σ_n ak[n,p]·(al[n,i]·M[n,q,j] + J[n,q,i]·δ[n,j])
   with rows (p, q) = p·ck + q, p < pk1 (ak = [a_(k-1), 1]), columns (i, j) =
   i·cl + j, i < pl1 (al likewise); the J term (J NULL: none) only for
   i < pl1 - 1 (not on the bias columns).  For each q the rows (p, q) are one
   product akᵀ·R_q over the samples, R_q[n, (i,j)] = al[n,i]·M[n,q,j] + J·δ,
   written straight into H (row stride ck·ld): BLAS when large enough
   (bpg_hess_mirror then copies the block below the diagonal; diagonal
   blocks: bpg_hess_kron_sym).  R: N·pl1·cl elements. */
static BPG_ENTRY void bpg_hess_kron(int64_t N, int64_t pk1, int64_t ck, int64_t pl1, int64_t cl,
                             const real *restrict ak, const real *restrict al,
                             const real *restrict M, const real *restrict J,
                             const real *restrict delta, real *restrict H, int64_t ld,
                             real *restrict R)
{
    const int64_t w = pl1 * cl, pl = pl1 - 1;
    for (int64_t q = 0; q < ck; q++) {
        for (int64_t n = 0; n < N; n++) {
            const real *restrict m = M + (n * ck + q) * cl;
            const real *restrict a = al + n * pl1;
            real *restrict r = R + n * w;
            for (int64_t i = 0; i < pl1; i++) {
                const real ai = a[i];
                #pragma omp simd
                for (int64_t j = 0; j < cl; j++) r[i * cl + j] = ai * m[j];
            }
            if (J) {
                const real *restrict jq = J + (n * ck + q) * pl;
                const real *restrict d = delta + n * cl;
                for (int64_t i = 0; i < pl; i++) {
                    const real ji = jq[i];
                    #pragma omp simd
                    for (int64_t j = 0; j < cl; j++) r[i * cl + j] += ji * d[j];
                }
            }
        }
        real *restrict C = H + q * ld;
        if (bpg_blas_gemm_ld(1, 0, pk1, w, N, ak, pk1, R, w, C, ck * ld, BPG_BLAS_MIN_TN))
            continue;
        for (int64_t p = 0; p < pk1; p++) {
            real *restrict c = C + p * ck * ld;
            for (int64_t j = 0; j < w; j++) c[j] = 0;
            for (int64_t n = 0; n < N; n++) {
                const real s = ak[n * pk1 + p];
                const real *restrict r = R + n * w;
                #pragma omp simd
                for (int64_t j = 0; j < w; j++) c[j] += s * r[j];
            }
        }
    }
}
