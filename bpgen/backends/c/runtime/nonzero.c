/* 1 when a block of v (size entries from element at of a direction; its K
   directions at a) is nonzero in one of them: with V the rows of V (read),
   else the unit vectors e_j .. e_(j+K-1), one of which falls in it. */
static inline int bpg_nonzero(const real *V, int64_t size, int64_t K, const real *restrict a,
                              int64_t j, int64_t at)
{
    if (!V) return j < at + size && at < j + K;
    for (int64_t i = 0; i < size * K; i++)
        if (a[i] != 0) return 1;
    return 0;
}
