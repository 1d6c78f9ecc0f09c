/* scores (R rows of T; N rows per step, the batch times K directions, so
   row r is query t = (r / N) mod T of sample (r mod N) / K): out = a, but
   fill where the key s comes after the query (causal: s > t) or is padding
   (m, when not NULL: the (T*(N/K), 1) mask of real steps, m[s*(N/K) + n]
   == 0); out may be a.  Per row: a copy of the keys up to the query, the
   fill after it, then the padding (loops without a test per entry) */
static inline void bpg_causal_mask(int64_t R, int64_t T, int64_t N, int64_t K, int causal,
                                   const real *m, real fill, const real *a, real *out)
{
    const int64_t nb = N / K;
    for (int64_t r = 0; r < R; r++) {
        const int64_t t = (r / N) % T, n = (r % N) / K;
        const int64_t keys = causal ? t + 1 : T;      /* the keys up to the query */
        const real *ar = a + r * T;
        real *o = out + r * T;
        if (o != ar)
            for (int64_t s = 0; s < keys; s++) o[s] = ar[s];
        for (int64_t s = keys; s < T; s++) o[s] = fill;
        if (m)
            for (int64_t s = 0; s < keys; s++)
                if (m[s * nb + n] == 0) o[s] = fill;
    }
}
