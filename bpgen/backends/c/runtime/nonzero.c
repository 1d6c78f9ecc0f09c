/* 1 when any of the n entries at a is nonzero (a block of a direction). */
static inline int bpg_nonzero(int64_t n, const real *restrict a)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != 0) return 1;
    return 0;
}
