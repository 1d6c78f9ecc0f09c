/* The results of one chunk of bpg_hessian_columns: the nb blocks of H·v,
   each stored with its K directions as extra columns (R x K x C, at
   base + ws*K; blocks: 4 int32 per block, R, C, at, ws, as for
   bpg_columns_in), into rows j .. j+K-1 of out (count x total): block b of
   direction d at out + (j + d)*total + at. */
static inline void bpg_columns_out(int64_t K, int64_t nb, const int32_t *restrict blocks,
                                   const real *restrict base, real *restrict out,
                                   int64_t total, int64_t j)
{
    for (int64_t b = 0; b < nb; b++) {
        const int64_t R = blocks[4*b], C = blocks[4*b + 1], at = blocks[4*b + 2];
        const real *const X = base + blocks[4*b + 3]*K;
        for (int64_t d = 0; d < K; d++) {
            real *restrict o = out + (j + d)*total + at;
            for (int64_t i = 0; i < R; i++)     /* rows of a few entries: no memcpy call each */
                for (int64_t c = 0; c < C; c++) o[i*C + c] = X[(i*K + d)*C + c];
        }
    }
}
