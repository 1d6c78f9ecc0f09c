/* The export's own product kernel (bpgen/c_export/runtime/prelude.c,
   bpg_own_gemm) on every shape M 1..2*BPG_MR+1, Nc 1..2*BPG_NR+3, K 0..6
   and around BPG_KC and 2*BPG_KC (its panels of copied rows of B), A and B
   each transposed or not, with leading dimensions larger than the rows,
   against a plain triple loop; compiled after the prelude (tests/test_export.py),
   with -DBPG_PRODUCTS and, for float, -DBPG_FLOAT32.  Each operand is its
   own allocation of exactly its size (ASan sees any read past it); C's
   padding between rows must stay untouched.  Prints the number of products
   checked and the tile (BPG_MR, BPG_NR); exit 1 on a difference. */
#include <stdio.h>
#include <stdlib.h>

static real value(int64_t i, int salt)
{
    return (real)((i * 7 + salt * 3) % 11) / 4 - 1;
}

int main(void)
{
    const int64_t Ks[] = {0, 1, 2, 3, 4, 5, 6, BPG_KC - 1, BPG_KC, BPG_KC + 1,
                          2 * BPG_KC + 3};
    int64_t M, Nc, i, j, k;
    int ta, tb, q, checked = 0;
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++)
            for (M = 1; M <= 2 * BPG_MR + 1; M++)
                for (Nc = 1; Nc <= 2 * BPG_NR + 3; Nc++)
                    for (q = 0; q < (int)(sizeof Ks / sizeof *Ks); q++) {
                        const int64_t K = Ks[q];
                        const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : Nc) + 1;
                        const int64_t ldc = Nc + 3, arows = ta ? K : M, brows = tb ? Nc : K;
                        real *A = malloc(sizeof(real) * (size_t)(arows * lda + 1));
                        real *B = malloc(sizeof(real) * (size_t)(brows * ldb + 1));
                        real *C = malloc(sizeof(real) * (size_t)(M * ldc));
                        for (i = 0; i < arows * lda; i++)
                            A[i] = value(i, 1);
                        for (i = 0; i < brows * ldb; i++)
                            B[i] = value(i, 2);
                        for (i = 0; i < M * ldc; i++)
                            C[i] = 99;
                        if (!bpg_own_gemm(ta, tb, M, Nc, K, A, lda, B, ldb, C, ldc))
                            return 1;
                        for (i = 0; i < M; i++)
                            for (j = 0; j < ldc; j++) {
                                real s = 0;
                                for (k = 0; k < K && j < Nc; k++)
                                    s += (ta ? A[k * lda + i] : A[i * lda + k])
                                         * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                                if (j < Nc ? C[i * ldc + j] != s : C[i * ldc + j] != 99) {
                                    printf("ta=%d tb=%d M=%ld Nc=%ld K=%ld: C[%ld, %ld] = %g, "
                                           "expected %g\n", ta, tb, (long)M, (long)Nc, (long)K,
                                           (long)i, (long)j, (double)C[i * ldc + j],
                                           j < Nc ? (double)s : 99.0);
                                    return 1;
                                }
                            }
                        free(A);
                        free(B);
                        free(C);
                        checked++;
                    }
    printf("%d %d %d\n", checked, (int)BPG_MR, (int)BPG_NR);
    return 0;
}
