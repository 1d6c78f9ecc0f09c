/* the gather ("transpose", S, F) of patterns.py without its table: per
   sample n, an S x F block as F x S, out[n][f][s] = in[n][s][f]; with
   S = 1 or F = 1 the same entries in the same order (a copy).  A
   permutation, so its adjoint is the transpose back (bpg_transpose_blocks
   with S and F swapped), with no zeroing */
__attribute__((always_inline))
static inline void bpg_transpose_blocks(int64_t N, int64_t S, int64_t F,
                                        const real *restrict in, real *restrict out)
{
    if (S == 1 || F == 1) {
        memcpy(out, in, sizeof(real) * (size_t)(N * S * F));
        return;
    }
    for (int64_t n = 0; n < N; n++) {
        const real *restrict a = in + n * S * F;
        real *restrict o = out + n * S * F;
        for (int64_t f = 0; f < F; f++)        /* stores in order, loads strided */
            for (int64_t s = 0; s < S; s++) o[f * S + s] = a[s * F + f];
    }
}
