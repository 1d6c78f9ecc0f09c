/* K tangent directions of an R x C matrix, direction-major (direction d at
   D + d*ld) -> "directions as extra columns" X (R x K x C: row i of
   direction d at X + (i*K + d)*C), the layout of bpg_hessian_columns'
   batched variables. */
static inline void bpg_dirs_to_cols(int64_t K, int64_t R, int64_t C, const real *restrict D,
                                    int64_t ld, real *restrict X)
{
    for (int64_t d = 0; d < K; d++)
        for (int64_t i = 0; i < R; i++)
            memcpy(X + (i * K + d) * C, D + d * ld + i * C, sizeof(real) * (size_t)C);
}
