/* The structured Hessian's symmetry: a diagonal block (size x size at A, row
   stride ld) averaged with its transpose; an off-diagonal block (rows x cols
   at A) copied transposed to B, in tiles that stay in cache. */
static void bpg_hess_symmetrize(int64_t size, real *restrict A, int64_t ld)
{
    for (int64_t i = 0; i < size; i++)
        for (int64_t j = i + 1; j < size; j++) {
            const real s = (A[i * ld + j] + A[j * ld + i]) / 2;
            A[i * ld + j] = s;
            A[j * ld + i] = s;
        }
}

static void bpg_hess_mirror(int64_t rows, int64_t cols, const real *restrict A,
                            real *restrict B, int64_t ld)
{
    enum { TILE = 32 };
    for (int64_t i0 = 0; i0 < rows; i0 += TILE)
        for (int64_t j0 = 0; j0 < cols; j0 += TILE) {
            const int64_t i1 = i0 + TILE < rows ? i0 + TILE : rows;
            const int64_t j1 = j0 + TILE < cols ? j0 + TILE : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++) B[j * ld + i] = A[i * ld + j];
        }
}
