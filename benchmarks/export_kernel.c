/* The exported library's own product kernel (bpg_own_gemm,
   bpgen/c_export/runtime/prelude.c) against a CBLAS ?gemm at given shapes
   (benchmarks/export_kernel.py compiles it after the prelude, with
   -DBPG_PRODUCTS, and with -DWITH_CBLAS -DGEMM=name against a CBLAS):

     export_kernel M Nc K ta tb

   prints the best of 15 batches of products, in microseconds of the
   thread's CPU time per product (steadier than wall time on a shared machine),
   and GFLOP/s (2·M·Nc·K flops), for the kernel and for the CBLAS; without
   arguments, "tile BPG_MR BPG_NR BPG_KC" (the kernel's tile and panel). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef WITH_CBLAS
#include <cblas.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int64_t M, Nc, K, i, calls;
    int ta, tb, r, which;
    real *A, *B, *C;
    if (argc == 1) {
        printf("tile %d %d %d\n", BPG_MR, BPG_NR, (int)BPG_KC);
        return 0;
    }
    if (argc != 6)
        return 1;
    M = atol(argv[1]), Nc = atol(argv[2]), K = atol(argv[3]);
    ta = atoi(argv[4]), tb = atoi(argv[5]);
    A = malloc(sizeof(real) * (size_t)(M * K));
    B = malloc(sizeof(real) * (size_t)(K * Nc));
    C = malloc(sizeof(real) * (size_t)(M * Nc));
    if (!A || !B || !C)
        return 1;
    for (i = 0; i < M * K; i++)
        A[i] = (real)(i % 7) / 7;
    for (i = 0; i < K * Nc; i++)
        B[i] = (real)(i % 5) / 5;
    calls = (int64_t)(2e7 / ((double)M * Nc * K + 1)) + 1;
    for (which = 0; which < 2; which++) {
        double best = 1e30;
#ifndef WITH_CBLAS
        if (which == 1)
            break;
#endif
        for (r = 0; r < 16; r++) {
            double t0 = now(), t;
            for (i = 0; i < calls; i++) {
                if (which == 0)
                    bpg_own_gemm(ta, tb, M, Nc, K, A, ta ? M : K, B, tb ? K : Nc, C, Nc);
#ifdef WITH_CBLAS
                else
                    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                         tb ? CblasTrans : CblasNoTrans, (int)M, (int)Nc, (int)K, 1, A,
                         (int)(ta ? M : K), B, (int)(tb ? K : Nc), 0, C, (int)Nc);
#endif
            }
            t = (now() - t0) / calls;
            if (r > 0 && t < best)     /* the first batch warms up */
                best = t;
        }
        printf("%s %.2f %.2f\n", which ? "cblas" : "own", 1e6 * best,
               2e-9 * M * Nc * K / best);
    }
    return 0;
}
