/* bpg_causal_mask (causal_mask.c: out = a with fill where the key s comes
   after the query t = (r / N) mod T, causal, or is padding, m[s*(N/K) + n]
   == 0; out may be a), and mx[r] = the maximum of row r of out (mx: R x 1)
   in the same pass (passes/mask_max.py): the maximum over the kept keys
   (vectorised: the row's padding masked and its maximum taken in one loop),
   then the fills.  The same value as bpg_rowmax of out after the mask,
   but for the sign of a zero maximum and for a row holding NaN (whose
   softmax exp(out - mx) / sum is the same all the same: ±0 shifts alike,
   and NaN makes the whole row's sum NaN) */
static inline void bpg_causal_mask_max(int64_t R, int64_t T, int64_t N, int64_t K, int causal,
                                       const real *m, real fill, const real *a, real *out,
                                       real *restrict mx)
{
    const int64_t nb = N / K;
    for (int64_t r = 0; r < R; r++) {
        const int64_t t = (r / N) % T, n = (r % N) / K;
        const int64_t keys = causal ? t + 1 : T;
        const real *ar = a + r * T;
        real *o = out + r * T;
        real x = -INFINITY;
        if (o != ar)
            for (int64_t s = 0; s < keys; s++) o[s] = ar[s];
        if (m) {
            const real *mn = m + n;
            #pragma omp simd reduction(max:x)
            for (int64_t s = 0; s < keys; s++) {
                const real v = mn[s * nb] == 0 ? fill : o[s];
                o[s] = v;
                x = v > x ? v : x;
            }
        } else {
            #pragma omp simd reduction(max:x)
            for (int64_t s = 0; s < keys; s++) x = o[s] > x ? o[s] : x;
        }
        for (int64_t s = keys; s < T; s++) o[s] = fill;
        mx[r] = keys < T && fill > x ? fill : x;
    }
}
