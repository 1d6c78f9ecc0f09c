/* The structured Hessian: out (N, p+1) = [a, 1], a layer's input with a
   constant input for its bias. */
static inline void bpg_hess_ones(int64_t N, int64_t p, const real *restrict a, real *restrict out)
{
    for (int64_t n = 0; n < N; n++) {
        memcpy(out + n * (p + 1), a + n * p, sizeof(real) * (size_t)p);
        out[n * (p + 1) + p] = 1;
    }
}
