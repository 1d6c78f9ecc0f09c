/* The structured Hessian's symmetry: a diagonal block (size x size at A, row
   stride ld) of which bpg_hess_kron computed the part right of its blk x blk
   diagonal blocks (and those blocks): the diagonal blocks averaged with their
   transposes, the rest copied below, in 32 x 32 tiles (the strided side of
   each tile stays in cache). */
static inline void bpg_hess_symmetrize(int64_t size, int64_t blk, real *restrict A, int64_t ld)
{
    enum { TILE = 32 };
    /* the blk x blk blocks on the diagonal: averaged with their transposes */
    for (int64_t b0 = 0; b0 < size; b0 += blk)
        for (int64_t i = b0; i < b0 + blk && i < size; i++)
            for (int64_t j = i + 1; j < b0 + blk && j < size; j++) {
                const real s = (A[i * ld + j] + A[j * ld + i]) / 2;
                A[i * ld + j] = s;
                A[j * ld + i] = s;
            }
    /* right of them (j >= the end of i's block): copied below, in tiles */
    for (int64_t i0 = 0; i0 < size; i0 += TILE) {
        const int64_t i1 = i0 + TILE < size ? i0 + TILE : size;
        for (int64_t j0 = i0 - i0 % blk; j0 < size; j0 += TILE) {
            const int64_t j1 = j0 + TILE < size ? j0 + TILE : size;
            for (int64_t j = j0; j < j1; j++) {
                const int64_t iend = j / blk * blk;    /* rows i of earlier blocks */
                for (int64_t i = i0; i < i1 && i < iend; i++) A[j * ld + i] = A[i * ld + j];
            }
        }
    }
}
