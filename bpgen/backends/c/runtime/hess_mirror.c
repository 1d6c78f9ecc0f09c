/* The structured Hessian's symmetry: an off-diagonal block (rows x cols at A,
   row stride ld) copied transposed to B, in 32 x 32 tiles (the strided side
   of each tile stays in cache). */
static BPG_ENTRY void bpg_hess_mirror(int64_t rows, int64_t cols, const real *restrict A,
                               real *restrict B, int64_t ld)
{
    enum { TILE = 32 };
    const int nt = BPG_USE_NT(ld);
    for (int64_t i0 = 0; i0 < rows; i0 += TILE)
        for (int64_t j0 = 0; j0 < cols; j0 += TILE) {
            const int64_t i1 = i0 + TILE < rows ? i0 + TILE : rows;
            const int64_t j1 = j0 + TILE < cols ? j0 + TILE : cols;
            if (nt)
                for (int64_t j = j0; j < j1; j++)
                    for (int64_t i = i0; i < i1; i++) bpg_put_nt(B + j * ld + i, A[i * ld + j]);
            else
                for (int64_t j = j0; j < j1; j++)
                    for (int64_t i = i0; i < i1; i++) B[j * ld + i] = A[i * ld + j];
        }
    if (nt)
        BPG_NT_FENCE();
}
