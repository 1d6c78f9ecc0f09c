/* The directions of one chunk of bpg_hessian_columns: K directions (rows
   j .. j+K-1 of V, a count x total array, or the unit vectors e_(first + j)
   .. when V is NULL) into the nb blocks of v, each stored with its
   directions as extra columns (R x K x C: row i of direction d at
   X + (i*K + d)*C).  blocks: 4 int32 per block: R, C, its first element in
   a direction (at), and where it lives, X = base + ws*K. */
static inline void bpg_columns_in(int64_t K, int64_t nb, const int32_t *restrict blocks,
                                  const real *restrict V, int64_t total, int64_t j,
                                  int64_t first, real *restrict base)
{
    for (int64_t b = 0; b < nb; b++) {
        const int64_t R = blocks[4*b], C = blocks[4*b + 1], at = blocks[4*b + 2];
        real *const X = base + blocks[4*b + 3]*K;
        if (V) {
            for (int64_t d = 0; d < K; d++) {
                const real *restrict v = V + (j + d)*total + at;
                for (int64_t i = 0; i < R; i++)     /* rows of a few entries: no memcpy call each */
                    for (int64_t c = 0; c < C; c++) X[(i*K + d)*C + c] = v[i*C + c];
            }
        } else {
            memset(X, 0, sizeof(real)*(size_t)(R*C*K));
            for (int64_t d = 0; d < K; d++) {
                const int64_t i = first + j + d - at;
                if (i >= 0 && i < R*C) X[(i/C*K + d)*C + i%C] = 1;
            }
        }
    }
}
