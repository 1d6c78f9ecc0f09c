/* scores (R rows of T; N rows per step, the batch times K directions, so
   row r is query t = (r / N) mod T of sample (r mod N) / K): out = a, but
   fill where the key s comes after the query (causal: s > t) or is padding
   (m, when not NULL: the (T*(N/K), 1) mask of real steps, m[s*(N/K) + n]
   == 0); out may be a */
static inline void bpg_causal_mask(int64_t R, int64_t T, int64_t N, int64_t K, int causal,
                                   const real *m, real fill, const real *a, real *out)
{
    const int64_t nb = N / K;
    for (int64_t r = 0; r < R; r++) {
        const int64_t t = (r / N) % T, n = (r % N) / K;
        for (int64_t s = 0; s < T; s++) {
            const int masked = (causal && s > t) || (m && m[s * nb + n] == 0);
            out[r * T + s] = masked ? fill : a[r * T + s];
        }
    }
}
