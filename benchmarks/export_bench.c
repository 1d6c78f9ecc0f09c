/* Times an exported network's loss_and_grad (benchmarks/export_speed.py),
   compiled with -DPREFIX=name -DHEADER='"name.h"':

     export_bench N params.bin x.bin y.bin lengths.bin|- calls repeats

   prints the median and the minimum over `repeats` of the time per call of
   `calls` calls, in microseconds (CLOCK_MONOTONIC), after a warm-up, and
   the loss. */
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
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long n, calls, repeats, r, c;
    P(_real) *params, *grad, loss;
    P(_x_t) *x;
    P(_y_t) *y;
    int32_t *lengths = NULL;
    void *work;
    double times[64];
    if (argc != 8)
        return 1;
    n = atol(argv[1]);
    calls = atol(argv[6]);
    repeats = atol(argv[7]);
    if (repeats > 64)
        repeats = 64;
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
    for (c = 0; c < calls; c++)
        P(_loss_and_grad)(params, n, x, LEN y, &loss, grad, work, P(_work_bytes)(n));
    for (r = 0; r < repeats; r++) {
        double t0 = now();
        for (c = 0; c < calls; c++)
            P(_loss_and_grad)(params, n, x, LEN y, &loss, grad, work, P(_work_bytes)(n));
        times[r] = (now() - t0) / calls;
    }
    qsort(times, repeats, sizeof *times, cmp);
    printf("%.3f %.3f %.17g\n", 1e6 * times[repeats / 2], 1e6 * times[0], (double)loss);
    return 0;
}
