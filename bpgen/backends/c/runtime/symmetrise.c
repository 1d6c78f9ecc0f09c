/* h (n x n) = (h + hᵀ)/2 in place, pairs of 32 x 32 tiles at a time (both
   in the L1 cache): the Hessian from its rows, its rounding averaged away.
   Entry by entry the same as api.py's _symmetrise ((a + b)·0.5; the
   diagonal kept). */
static BPG_ENTRY void bpg_symmetrise(int64_t n, real *restrict h)
{
    const int64_t B = 32;
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        const int64_t i1 = i0 + B < n ? i0 + B : n;
        for (int64_t j0 = i0; j0 < n; j0 += B) {
            const int64_t j1 = j0 + B < n ? j0 + B : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j1; j++) {
                    const real a = (h[i*n + j] + h[j*n + i]) * (real)0.5;
                    h[i*n + j] = a;
                    h[j*n + i] = a;
                }
        }
    }
}
