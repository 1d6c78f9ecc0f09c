/* The structured Hessian: Λ_k[n] = D·W·Λ_next[n]·Wᵀ·D + diag(d2 ⊙ q), D = diag(d1),
   (N, u, u), from Λ_next (N, v, v) and the next layer's W (u, v); W NULL: no
   product (Λ_next is the output's Λ, u = v).  Two products over all samples:
   T = Λ_next·Wᵀ, then (per-sample transposes of T)·Wᵀ = W·Λ_next·Wᵀ (Λ_next is
   symmetric).  Averaged with its transpose: symmetric to the last bit.
   tmp: 2·N·u·v elements.  Calls bpg_gemm_nt (pasted before this file). */
static void bpg_hess_sandwich(int64_t N, int64_t u, int64_t v, const real *restrict W,
                              const real *restrict next, const real *restrict d1,
                              const real *restrict d2, const real *restrict q,
                              real *restrict out, real *restrict tmp)
{
    if (W) {
        real *restrict t = tmp, *restrict tt = tmp + N * u * v;
        bpg_gemm_nt(N * v, u, v, next, W, t);              /* (N·v, u) */
        for (int64_t n = 0; n < N; n++)                     /* (N, u, v) */
            for (int64_t a = 0; a < v; a++)
                for (int64_t b = 0; b < u; b++)
                    tt[n * u * v + b * v + a] = t[n * v * u + a * u + b];
        bpg_gemm_nt(N * u, u, v, tt, W, out);
    } else {
        memcpy(out, next, sizeof(real) * (size_t)(N * u * u));
    }
    for (int64_t n = 0; n < N; n++) {
        real *restrict o = out + n * u * u;
        const real *restrict d = d1 + n * u;
        for (int64_t i = 0; i < u; i++) {
            o[i * u + i] = d[i] * o[i * u + i] * d[i] + d2[n * u + i] * q[n * u + i];
            for (int64_t j = i + 1; j < u; j++) {
                const real s = (d[i] * o[i * u + j] * d[j] + d[j] * o[j * u + i] * d[i]) / 2;
                o[i * u + j] = s;
                o[j * u + i] = s;
            }
        }
    }
}
