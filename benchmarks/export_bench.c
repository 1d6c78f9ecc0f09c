/* Times an exported network's loss_and_grad (benchmarks/export_speed.py),
   compiled with -DPREFIX=name -DHEADER='"name.h"':

     export_bench N params.bin x.bin y.bin lengths.bin|-

   then reads a number of calls a line from stdin and, for each, runs that
   many calls and prints the thread's CPU time per call in microseconds
   (CLOCK_THREAD_CPUTIME_ID: time on the CPU, steadier than wall time on a
   shared machine) and the loss; so that the driver can interleave these
   batches with the module's.  The first call warms up. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define P(name) CAT(PREFIX, name)
#if P(_IS_SEQUENCE)
#define LEN lengths,
#else
#define LEN
#endif

static void *read_file(const char *path, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    void *buf = malloc(bytes ? bytes : 1);
    if (!f || !buf || fread(buf, 1, bytes, f) != bytes)
        return NULL;
    fclose(f);
    return buf;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n, calls, c;
    P(_real) *params, *grad, loss;
    P(_x_t) *x;
    P(_y_t) *y;
    int32_t *lengths = NULL;
    void *work;
    if (argc != 6)
        return 1;
    n = atol(argv[1]);
    params = read_file(argv[2], P(_N_PARAMS) * sizeof *params);
    x = read_file(argv[3], P(_X_SIZE)(n) * sizeof *x);
    y = read_file(argv[4], P(_Y_SIZE)(n) * sizeof *y);
    if (strcmp(argv[5], "-"))
        lengths = read_file(argv[5], (size_t)n * sizeof *lengths);
    grad = malloc(P(_N_PARAMS) * sizeof *grad);
    work = malloc(P(_work_bytes)(n));
    if (!params || !x || !y || !grad || !work)
        return 1;
    (void)lengths;
    P(_loss_and_grad)(params, n, x, LEN y, &loss, grad, work, P(_work_bytes)(n));
    while (scanf("%ld", &calls) == 1 && calls > 0) {
        double t0 = now();
        for (c = 0; c < calls; c++)
            P(_loss_and_grad)(params, n, x, LEN y, &loss, grad, work, P(_work_bytes)(n));
        printf("%.4f %.17g\n", 1e6 * (now() - t0) / calls, (double)loss);
        fflush(stdout);
    }
    return 0;
}
