/* The inverse of bpg_dirs_to_cols: K directions of an R x C matrix stored
   as extra columns, X (R x K x C) -> direction-major, direction d at
   D + d*ld. */
static inline void bpg_cols_to_dirs(int64_t K, int64_t R, int64_t C, const real *restrict X,
                                    real *restrict D, int64_t ld)
{
    for (int64_t d = 0; d < K; d++)
        for (int64_t i = 0; i < R; i++)
            memcpy(D + d * ld + i * C, X + (i * K + d) * C, sizeof(real) * (size_t)C);
}
