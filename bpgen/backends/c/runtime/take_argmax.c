/* out (R x 1): per row, val at the first maximum of the row of sel (R x C) */
static inline void bpg_take_argmax(int64_t R, int64_t C, const real *restrict sel,
                                   const real *restrict val, real *restrict out)
{
    for (int64_t r = 0; r < R; r++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (sel[r * C + c] > sel[r * C + best]) best = c;
        out[r] = val[r * C + best];
    }
}
