/* Test driver of an exported network (tests/test_export.py), compiled with
   -DPREFIX=name -DHEADER='"name.h"':

     driver N params.bin x.bin y.bin v.bin lengths.bin|- out.bin [threads]

   runs every exported function on the data, each with a workspace of
   exactly PREFIX_<F>_WORK_BYTES(N) bytes followed by canary bytes (checked
   untouched), and writes forward's output, loss, loss_and_grad's loss and
   gradient, hvp, ggn_vp and the Hessian (each only if exported; 0 if not, the
   Hessian only if exported) to out.bin.  It checks
   the error codes (n = 0, a short workspace, NULL) and PREFIX_work_bytes
   against the macro.  With `threads` > 0 (needs -DDRIVER_THREADS and
   -pthread) it also runs loss_and_grad from that many threads at once,
   each with its own workspace, and checks every result bitwise against the
   first.  Exit status: 0 ok, 1 usage or I/O, 3 a canary overwritten, 4 an
   error code, 5 threads differ. */
#ifdef DRIVER_THREADS
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define P(name) CAT(PREFIX, name)
#define CANARY 64

typedef P(_real) real_t;

static void *read_file(const char *path, size_t bytes)
{
    FILE *f;
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf || !(f = fopen(path, "rb")))
        return NULL;
    if (fread(buf, 1, bytes, f) != bytes) {
        fclose(f);
        return NULL;
    }
    fclose(f);
    return buf;
}

/* a workspace of exactly `bytes`, CANARY bytes of 0xA5 after it */
static unsigned char *workspace(size_t bytes)
{
    unsigned char *w = malloc(bytes + CANARY);
    if (w)
        memset(w + bytes, 0xA5, CANARY);
    return w;
}

static int canary_ok(const unsigned char *w, size_t bytes)
{
    size_t i;
    for (i = 0; i < CANARY; i++)
        if (w[bytes + i] != 0xA5)
            return 0;
    return 1;
}

static long n;
static real_t *params, *v;
static P(_x_t) *x;
static P(_y_t) *y;
static int32_t *lengths;

#if P(_IS_SEQUENCE)
#define LEN lengths,
#else
#define LEN
#endif

#ifdef DRIVER_THREADS
typedef struct {
    real_t loss;
    real_t *grad;
    int status;
} job_t;

static void *run_job(void *arg)
{
    job_t *j = arg;
    size_t bytes = P(_LOSS_AND_GRAD_WORK_BYTES)(n);
    unsigned char *w = workspace(bytes);
    int k;
    j->status = -1;
    for (k = 0; k < 20 && w; k++)
        j->status = P(_loss_and_grad)(params, n, x, LEN y, &j->loss, j->grad, w, bytes);
    free(w);
    return NULL;
}
#endif

#define CALL(F, UF, ...)                                                    \
    do {                                                                  \
        size_t bytes_ = P(CAT(_, CAT(UF, _WORK_BYTES)))(n);               \
        unsigned char *w_ = workspace(bytes_);                            \
        int s_;                                                           \
        if (!w_)                                                          \
            return 1;                                                     \
        s_ = P(CAT(_, F))(__VA_ARGS__, w_, bytes_);                      \
        if (s_ != P(_OK)) {                                               \
            fprintf(stderr, "driver: " #F " returned %d\n", s_);          \
            return 4;                                                     \
        }                                                                 \
        if (!canary_ok(w_, bytes_)) {                                     \
            fprintf(stderr, "driver: " #F " wrote past its workspace\n"); \
            return 3;                                                     \
        }                                                                 \
        if (bytes_ > 8 && P(CAT(_, F))(__VA_ARGS__, w_, bytes_ - 8) != P(_ERR_WORK)) \
            return 4;                                                     \
        if (P(CAT(_, F))(__VA_ARGS__, NULL, bytes_) != P(_ERR_WORK))     \
            return 4;                                                     \
        free(w_);                                                         \
    } while (0)

int main(int argc, char **argv)
{
    FILE *out;
    real_t *buf;
    size_t np = P(_N_PARAMS);
    size_t total;
    int threads = argc > 8 ? atoi(argv[8]) : 0;
    if (argc < 8)
        return 1;
    n = strtol(argv[1], NULL, 10);
    params = read_file(argv[2], np * sizeof *params);
    x = read_file(argv[3], P(_X_SIZE)(n) * sizeof *x);
    y = read_file(argv[4], P(_Y_SIZE)(n) * sizeof *y);
    v = read_file(argv[5], np * sizeof *v);
    lengths = strcmp(argv[6], "-") ? read_file(argv[6], (size_t)n * sizeof *lengths) : NULL;
    total = P(_OUTPUT_SIZE)(n) + 2 + 3 * np + (P(_HAVE_HESSIAN) ? np * np : 0);
    buf = malloc(total * sizeof *buf);
    if (!params || !x || !y || !v || (strcmp(argv[6], "-") && !lengths) || !buf)
        return 1;
    memset(buf, 0, total * sizeof *buf);
    if (P(_work_bytes)(n) != P(_WORK_BYTES)(n) || P(_work_bytes)(0) != 0)
        return 4;
#if P(_HAVE_FORWARD)
    CALL(forward, FORWARD, params, n, x, LEN buf);
    if (P(_forward)(params, 0, x, LEN buf, buf, 1) != P(_ERR_BATCH))
        return 4;
#endif
#if P(_HAVE_LOSS)
    CALL(loss, LOSS, params, n, x, LEN y, buf + P(_OUTPUT_SIZE)(n));
#endif
#if P(_HAVE_LOSS_AND_GRAD)
    CALL(loss_and_grad, LOSS_AND_GRAD, params, n, x, LEN y, buf + P(_OUTPUT_SIZE)(n) + 1,
         buf + P(_OUTPUT_SIZE)(n) + 2);
    if (P(_loss_and_grad)(NULL, n, x, LEN y, buf, buf, buf, 1) != P(_ERR_NULL))
        return 4;
#endif
#if P(_HAVE_HVP)
    CALL(hvp, HVP, params, n, x, LEN y, v, buf + P(_OUTPUT_SIZE)(n) + 2 + np);
#endif
#if P(_HAVE_GGN_VP)
    CALL(ggn_vp, GGN_VP, params, n, x, LEN y, v, buf + P(_OUTPUT_SIZE)(n) + 2 + 2 * np);
#endif
#if P(_HAVE_HESSIAN)
    CALL(hessian, HESSIAN, params, n, x, LEN y, buf + P(_OUTPUT_SIZE)(n) + 2 + 3 * np);
#endif
    out = fopen(argv[7], "wb");
    if (!out || fwrite(buf, sizeof *buf, total, out) != total || fclose(out))
        return 1;
#ifdef DRIVER_THREADS
    if (threads > 0) {
        pthread_t tid[16];
        job_t jobs[16];
        int i;
        if (threads > 16)
            threads = 16;
        for (i = 0; i < threads; i++) {
            jobs[i].grad = malloc(np * sizeof(real_t));
            if (!jobs[i].grad || pthread_create(&tid[i], NULL, run_job, &jobs[i]))
                return 1;
        }
        for (i = 0; i < threads; i++)
            pthread_join(tid[i], NULL);
        for (i = 0; i < threads; i++)
            if (jobs[i].status != P(_OK) || jobs[i].loss != jobs[0].loss
                || memcmp(jobs[i].grad, jobs[0].grad, np * sizeof(real_t)))
                return 5;
        if (jobs[0].loss != buf[P(_OUTPUT_SIZE)(n) + 1]
            || memcmp(jobs[0].grad, buf + P(_OUTPUT_SIZE)(n) + 2, np * sizeof(real_t)))
            return 5;
    }
#else
    (void)threads;
#endif
    return 0;
}
