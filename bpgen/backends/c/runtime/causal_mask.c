/* scores (R rows of T; row r is query (r / N) mod T): out = a, but fill
   where the key s comes after the query (s > t); out may be a */
static inline void bpg_causal_mask(int64_t R, int64_t T, int64_t N, real fill,
                                   const real *a, real *out)
{
    for (int64_t r = 0; r < R; r++) {
        const int64_t t = (r / N) % T;
        for (int64_t s = 0; s < T; s++) out[r * T + s] = s > t ? fill : a[r * T + s];
    }
}
