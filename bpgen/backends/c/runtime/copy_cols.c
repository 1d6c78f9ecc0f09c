/* columns [from, from+W) of A (R x CA) -> columns [to, to+W) of B (R x CB) */
static inline void bpg_copy_cols(int64_t R, int64_t W, const real *restrict A, int64_t CA,
                                 int64_t from, real *restrict B, int64_t CB, int64_t to)
{
    for (int64_t r = 0; r < R; r++)
        memcpy(B + r * CB + to, A + r * CA + from, sizeof(real) * (size_t)W);
}
