/* bpg_causal_mask (causal_mask.c: out = a with fill where the key s comes
   after the query t = (r / N) mod T, causal, or is padding, m[s*(N/K) + n]
   == 0; out may be a), and mx[r] = the maximum of row r of out (mx: R x 1)
   in the same pass (passes/mask_max.py): for fill -inf the maximum over the
   kept keys, read while the row is in the cache (a row keeps key 0), equal
   to bpg_rowmax of out after the mask (the same comparisons in the same
   order: the fills compared once) */
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
        if (o != ar)
            for (int64_t s = 0; s < keys; s++) o[s] = ar[s];
        for (int64_t s = keys; s < T; s++) o[s] = fill;
        if (m)
            for (int64_t s = 0; s < keys; s++)
                if (m[s * nb + n] == 0) o[s] = fill;
        real x = o[0];
        for (int64_t s = 1; s < keys; s++) x = o[s] > x ? o[s] : x;
        mx[r] = keys < T && fill > x ? fill : x;
    }
}
