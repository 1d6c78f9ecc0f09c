/* out (R x C): per row, val[r] (R x 1) at the first maximum of the row of sel, 0 elsewhere */
static inline void bpg_put_argmax(int64_t R, int64_t C, const real *restrict sel,
                                  const real *restrict val, real *restrict out)
{
    memset(out, 0, sizeof(real) * (size_t)(R * C));
    for (int64_t r = 0; r < R; r++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (sel[r * C + c] > sel[r * C + best]) best = c;
        out[r * C + best] = val[r];
    }
}
