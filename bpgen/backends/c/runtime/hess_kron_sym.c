/* The structured Hessian: a diagonal block, exactly symmetric,
       H[(p,q), (i,j)] = Σ_n a[n,p]·a[n,i]·M[n,q,j]
   rows and columns (p, q) = p·c + q, p < p1 (a = [a_(k-1), 1]), M[n]
   symmetric.  The c x c tile (p, i) of each pair p <= i is one row of
   G = Wᵀ·M, W[n, pair] = a[n,p]·a[n,i] (one product over the samples per
   chunk of pc pairs, BLAS when large enough), written at (p, i) and, from
   cache, transposed at (i, p): no pass over H reads it back.  Tiles p = i
   are averaged with their transposes.  W: N·pc elements, G: pc·c·c. */
static BPG_ENTRY void bpg_hess_kron_sym(int64_t N, int64_t p1, int64_t c, const real *restrict a,
                                        const real *restrict M, real *restrict H, int64_t ld,
                                        real *restrict W, real *restrict G, int64_t pc)
{
    const int64_t cc = c * c;
    const int nt = BPG_USE_NT(ld);                 /* see prelude.c */
    int64_t p = 0, i = 0;                      /* the next pair, p <= i */
    while (p < p1) {
        const int64_t p_start = p, i_start = i;
        int64_t m = 0;
        for (; m < pc && p < p1; m++) {
            for (int64_t n = 0; n < N; n++) W[n * pc + m] = a[n * p1 + p] * a[n * p1 + i];
            if (++i == p1) { p++; i = p; }
        }
        if (!bpg_blas_gemm_ld(1, 0, m, cc, N, W, pc, M, cc, G, cc, BPG_BLAS_MIN_TN)) {
            for (int64_t r = 0; r < m; r++) {
                real *restrict g = G + r * cc;
                for (int64_t e = 0; e < cc; e++) g[e] = 0;
                for (int64_t n = 0; n < N; n++) {
                    const real s = W[n * pc + r];
                    const real *restrict mn = M + n * cc;
                    #pragma omp simd
                    for (int64_t e = 0; e < cc; e++) g[e] += s * mn[e];
                }
            }
        }
        p = p_start;
        i = i_start;
        for (int64_t r = 0; r < m; r++) {
            const real *restrict g = G + r * cc;
            real *restrict up = H + p * c * ld + i * c;       /* rows p·c + q, columns i·c + j */
            if (p == i) {
                for (int64_t q = 0; q < c; q++)
                    for (int64_t j = 0; j < c; j++)
                        up[q * ld + j] = (g[q * c + j] + g[j * c + q]) / 2;
            } else {
                real *restrict lo = H + i * c * ld + p * c;   /* rows i·c + j, columns p·c + q */
                for (int64_t q = 0; q < c; q++)
                    for (int64_t j = 0; j < c; j++) up[q * ld + j] = g[q * c + j];
                if (nt)
                    for (int64_t j = 0; j < c; j++)
                        for (int64_t q = 0; q < c; q++) bpg_put_nt(lo + j * ld + q, g[q * c + j]);
                else
                    for (int64_t j = 0; j < c; j++)
                        for (int64_t q = 0; q < c; q++) lo[j * ld + q] = g[q * c + j];
            }
            if (++i == p1) { p++; i = p; }
        }
    }
    if (nt)
        BPG_NT_FENCE();
}
