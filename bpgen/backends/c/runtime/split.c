/* A large call's batch split across threads (docs/performance.md,
   "Threads"): forward, loss, loss_and_grad and hvp, from the C entry points
   (fastcall.c) and the Python path (call.py) alike, through bpg_entry_run.
   Copied verbatim after fastcall.c (whose size checks and constants it
   uses; fastcall.py).

   A call the thread rule makes large (bpg_threads_take: the count n > 1 and
   N times one sample's work at least BPG_THREADS_MIN_WORK) runs as
   s = min(n, N / BPGS_MIN_ROWS) contiguous slices of the batch when s >= 2,
   sizes differing by at most one (slice i: samples floor(N*i/s) ..
   floor(N*(i+1)/s) - 1), each on its own thread (the
   calling thread runs slice 0), each calling the generated function on its
   slice with its own workspace while the BLAS stays at 1 thread.  Any other
   large call hands its products to the BLAS's n threads instead, and a
   small call runs on the calling thread alone.

   The slices' results are combined in a fixed order, so a result depends
   only on n and N, never on timing:
   - forward: each slice writes its own rows of the output (time-major
     outputs: its rows of every step);
   - loss, loss_and_grad, hvp: every output is a mean over the batch's
     samples (and steps) plus the l2 term, so with slice i's output o_i
     (its own mean plus the same l2 term) and weight w_i = N_i / N,
     sum_i w_i o_i = (1/N) sum_i N_i mean_i + (sum_i w_i) l2 = the batch's
     output, the weights summing to 1.  Each entry of the output is
     w_0 o_0 + w_1 o_1 + ... in that order, whichever thread computes it
     (each thread a fixed range of entries, after every slice is done);
     but a weight gradient A^T B over the samples that the generated code
     prints as bpg_gemm_tn_out (gemm_tn_out.c, picked by the emitter's
     split_products) of at least BPGS_TOGETHER_MIN entries the slices make
     together, in the call's output (bpgs_together): each thread a fixed
     block, sum_i w_i (A_i^T B_i)[block] in slice order, and the sum after
     skips it.
     A padded batch whose loss reads every step (lengths given) averages
     over its real (sample, step) pairs: w_i is then slice i's share of
     them (bpgs_weights).

   The per-sample inputs are sliced by bpgs_rows: an array of T blocks of N
   rows (batch-first: T = 1, the slice is a pointer into it; time-major
   sequences: T steps, each block's rows of the slice copied into the
   slice's workspace).  Any other per-sample argument (an (N,) array: T = 1,
   a row of one element) slices the same way.

   The threads are created for the call and joined before it returns (no
   pool survives a call, so fork() needs no care); creating and joining one
   took 50-95 us on a loaded machine, against the >= 1 ms of a call this
   large.  A thread that
   cannot be created has its slice run by the calling thread (same result).
   When the workspace the caller sized (for the count at the time) is too
   small, because the count changed since, the slices get their own block;
   if that cannot be allocated either, the call runs unsplit. */

#include <sched.h>

/* the fewest samples a slice may have: below, the BLAS's threads do the
   call (fastcall.py sets it: 8 for sequences and images, 32 for networks
   of dense layers alone, see docs/performance.md) */
#ifndef BPGS_MIN_ROWS
#define BPGS_MIN_ROWS 8
#endif
#define BPGS_MAX 256         /* slices at most */
static int64_t bpgs_min_rows = BPGS_MIN_ROWS;
static double bpgs_min_work = BPG_THREADS_MIN_WORK;
static int64_t bpgs_calls;          /* calls run split (read by the tests) */

/* The rule from now on, for this module (tests and measurements): *rows,
   the fewest samples per slice (1 splits any large call of 2 or more
   samples, a huge number none), and *work, the least work of a large call;
   a value below 1 (below 0 for the work) keeps the current one.  Both are
   replaced by the values before. */
void bpg_split_rule(int64_t *rows, double *work)
{
    const int64_t old_rows = bpgs_min_rows;
    const double old_work = bpgs_min_work;
    if (*rows >= 1)
        bpgs_min_rows = *rows;
    if (*work >= 0)
        bpgs_min_work = *work;
    *rows = old_rows;
    *work = old_work;
}

/* the number of calls that ran split */
int64_t bpg_split_calls(void)
{
    return __atomic_load_n(&bpgs_calls, __ATOMIC_RELAXED);
}

/* the work of N samples of an entry point (the thread rule's and the GIL's
   measure: hvp's is ~3 times the first-order functions') */
static double bpgs_work(int entry, int64_t N)
{
    const double work = (double)N * (double)BPGF_WORK_PER_SAMPLE;
    return entry == BPGF_E_HVP ? 3 * work : work;
}

/* the slices a call of N samples at count n runs as: n, or fewer when a
   slice would have fewer than bpgs_min_rows samples (1: unsplit) */
static int bpgs_slices(int64_t N, int n)
{
    const int64_t most = N / bpgs_min_rows;
    if (n > BPGS_MAX)
        n = BPGS_MAX;
    return most >= n ? n : most >= 2 ? (int)most : 1;
}

/* elements, rounded up to whole 64-byte lines */
static size_t bpgs_round(size_t size)
{
    const size_t unit = 64 / sizeof(real);
    return (size + unit - 1) / unit * unit;
}

/* the output's elements not proportional to N (all of it, for loss,
   loss_and_grad and hvp) */
static size_t bpgs_out_fixed(int entry)
{
    return entry == BPGF_E_LOSS ? BPGF_OUT_LOSS_B
        : entry == BPGF_E_HVP ? BPGF_OUT_HVP_B
        : entry == BPGF_E_LOSS_AND_GRAD ? BPGF_OUT_LOSS_AND_GRAD_B : 0;
}

/* The workspace of one slice of m samples: the generated function's, then
   its x and y gathered (time-major ones only), then its own output (the
   reduced outputs, or a time-major forward output); 0 on overflow.
   Offsets into it in at[0..2] (x, y, out) when `at` is not NULL. */
static size_t bpgs_slice_ws(int entry, int64_t m, size_t *at)
{
    const int64_t T = BPGF_STEPS ? BPGF_STEPS : 1;
    const int64_t wa = entry == BPGF_E_FORWARD ? BPGF_WS_FORWARD_A
        : entry == BPGF_E_LOSS ? BPGF_WS_LOSS_A
        : entry == BPGF_E_HVP ? BPGF_WS_HVP_A : BPGF_WS_LOSS_AND_GRAD_A;
    const int64_t wb = entry == BPGF_E_FORWARD ? BPGF_WS_FORWARD_B
        : entry == BPGF_E_LOSS ? BPGF_WS_LOSS_B
        : entry == BPGF_E_HVP ? BPGF_WS_HVP_B : BPGF_WS_LOSS_AND_GRAD_B;
    size_t size = (size_t)wb, parts[3];
    if (!bpgf_madd(&size, (size_t)m, (size_t)wa) || !bpgf_round(&size))
        return 0;
    parts[0] = size;                    /* x, time-major: gathered */
    if (BPGF_STEPS && (!bpgf_madd(&size, (size_t)m, BPGF_IN_SIZE * BPGF_X_REALS)
                       || !bpgf_round(&size)))
        return 0;
    parts[1] = size;                    /* y, time-major (every step's loss) */
    if (entry != BPGF_E_FORWARD && BPGF_LOSS_ALL_STEPS
        && (!bpgf_madd(&size, (size_t)m * (size_t)T, BPGF_K) || !bpgf_round(&size)))
        return 0;
    parts[2] = size;                    /* the slice's output */
    if (entry != BPGF_E_FORWARD && (!bpgf_madd(&size, 1, bpgs_out_fixed(entry))
                                    || !bpgf_round(&size)))
        return 0;
    if (entry == BPGF_E_FORWARD && BPGF_SEQ_OUT
        && (!bpgf_madd(&size, (size_t)m * (size_t)T, BPGF_K) || !bpgf_round(&size)))
        return 0;
    if (at)
        memcpy(at, parts, sizeof parts);
    return size;
}

/* the first sample of slice i of n */
static int64_t bpgs_start(int64_t N, int n, int i)
{
    return (int64_t)(((__int128)N * i) / n);
}

/* The workspace (elements) a call of N samples needs at count n: unsplit,
   the generated function's; split, every slice's; 0 on overflow. */
static size_t bpgs_ws_need(int entry, int64_t N, int n)
{
    const int s = bpgs_slices(N, n);
    if (s == 1) {
        size_t at[3];
        return bpgs_slice_ws(entry, N, at) ? at[0] : 0;
    }
    size_t total = 0;
    for (int i = 0; i < s; i++) {
        const size_t one = bpgs_slice_ws(entry, bpgs_start(N, s, i + 1) - bpgs_start(N, s, i),
                                         NULL);
        if (!one || !bpgf_madd(&total, 1, one))
            return 0;
    }
    return total;
}

/* Rows a .. a+m-1 of each of T blocks of N rows of `row` bytes: in place when
   T == 1, else copied, block after block, to `dst`. */
static const void *bpgs_rows(const void *src, int64_t N, int64_t T, size_t row, int64_t a,
                             int64_t m, void *dst)
{
    if (T == 1)
        return (const char *)src + (size_t)a * row;
    for (int64_t t = 0; t < T; t++)
        memcpy((char *)dst + (size_t)(t * m) * row, (const char *)src + (size_t)(t * N + a) * row,
               (size_t)m * row);
    return dst;
}

#if defined(BPG_GEMM_TN_OUT) && defined(BPG_BLAS)
/* the weight gradients the slices make together (gemm_tn_out.c): at most
   BPGS_PRODUCTS of them a call, of at least BPGS_TOGETHER_MIN entries each
   (a smaller one: each slice its own, summed after), in a call of at most
   BPGS_TOGETHER_SLICES slices */
#define BPGS_TOGETHER 1
#define BPGS_PRODUCTS 32
#define BPGS_TOGETHER_SLICES 64
#define BPGS_TOGETHER_MIN 8192
#ifndef BPGS_SPINS
#define BPGS_SPINS 1000     /* ~30-60 us on x86 before a barrier's wait sleeps */
#endif
static int64_t bpgs_together_min = BPGS_TOGETHER_MIN;
static int64_t bpgs_products;   /* products made together (read by the tests) */
/* one such product: what each slice published (its rows of A and B) */
typedef struct {
    const real *a[BPGS_TOGETHER_SLICES], *b[BPGS_TOGETHER_SLICES];
    int64_t k[BPGS_TOGETHER_SLICES], m[BPGS_TOGETHER_SLICES], nc[BPGS_TOGETHER_SLICES];
    size_t off[BPGS_TOGETHER_SLICES];
} bpgs_product;
#endif

/* The least entries of a weight gradient the slices make together
   (gemm_tn_out.c) from now on, for this module (tests and measurements):
   *least >= 1 replaces it (1: every one, a huge number: none); replaced by
   the value before, 0 when the module has no such product. */
void bpg_split_together(int64_t *least)
{
#ifdef BPGS_TOGETHER
    const int64_t old = bpgs_together_min;
    if (*least >= 1)
        __atomic_store_n(&bpgs_together_min, *least, __ATOMIC_RELAXED);
    *least = old;
#else
    *least = 0;
#endif
}

/* the number of weight gradients the slices made together */
int64_t bpg_split_products(void)
{
#ifdef BPGS_TOGETHER
    return __atomic_load_n(&bpgs_products, __ATOMIC_RELAXED);
#else
    return 0;
#endif
}

typedef struct {
    int entry, n;
    int64_t N;
    const bpgf_x_t *x;
    const real *mk;             /* the masks (lengths given), or NULL */
    const real *y;
    const real *const *p, *const *v;
    real *out;
    real *ws;
    size_t at[BPGS_MAX];        /* slice i's workspace: ws + at[i] */
    double w[BPGS_MAX];         /* slice i's weight (bpgs_weights) */
    int finite[BPGS_MAX];       /* part i of the summed output is finite (bpgs_reduce) */
    pthread_mutex_t lock;
    pthread_cond_t all_done;
    int done;                   /* slices finished */
    int go;                     /* the slices' threads may start (bpgs_split) */
#ifdef BPGS_TOGETHER
    int together;               /* the slices make their weight gradients together */
    int64_t together_min;       /* of this many entries or more (bpg_split_together) */
    int ndone;                  /* the output ranges made so: [off, off + len) */
    size_t done_off[BPGS_PRODUCTS], done_len[BPGS_PRODUCTS];
    /* product q's publications in prod[q % 2]: a slice publishes product q + 2
       only after every slice has passed product q + 1's first barrier, so
       after every slice is done reading product q's (the job lives on the
       calling thread's stack: a few KiB) */
    bpgs_product prod[2];
    pthread_cond_t turn;        /* bpgs_barrier's sleepers */
    int bar_count __attribute__((aligned(64)));     /* the barrier (bpgs_barrier) */
    int bar_gen;
#endif
} bpgs_job;

typedef struct {
    bpgs_job *job;
    int i;
    int q;              /* the products made together so far (bpgs_together) */
    real *out;          /* the slice's own output */
} bpgs_task;

#ifdef BPGS_TOGETHER
/* every slice's thread waits here until all have arrived: a short spin
   (the slices run the same code, so they mostly arrive together), then
   asleep, not holding a core another process may want */
static void bpgs_barrier(bpgs_job *j)
{
    const int gen = __atomic_load_n(&j->bar_gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&j->bar_count, 1, __ATOMIC_ACQ_REL) == j->n) {
        __atomic_store_n(&j->bar_count, 0, __ATOMIC_RELAXED);
        pthread_mutex_lock(&j->lock);
        __atomic_store_n(&j->bar_gen, gen + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&j->turn);
        pthread_mutex_unlock(&j->lock);
        return;
    }
    for (int spins = 0; spins < BPGS_SPINS; spins++) {
        if (__atomic_load_n(&j->bar_gen, __ATOMIC_ACQUIRE) != gen)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&j->lock);
    while (__atomic_load_n(&j->bar_gen, __ATOMIC_ACQUIRE) == gen)
        pthread_cond_wait(&j->turn, &j->lock);
    pthread_mutex_unlock(&j->lock);
}

/* C (M x Nc, rows ldc apart) = alpha·Aᵀ·B (+ C when beta), A stored K x M
   (rows lda apart), B K x Nc (ldb): by the BLAS, or inline when it cannot
   (MKL that did not load, sizes beyond its 32-bit integers) */
static void bpgs_gemm_tn(int64_t M, int64_t Nc, int64_t K, real alpha, const real *A, int64_t lda,
                         const real *B, int64_t ldb, int beta, real *C, int64_t ldc)
{
    if (bpg_blas_gemm_ab(1, 0, M, Nc, K, alpha, A, lda, B, ldb, beta ? 1 : 0, C, ldc, 0))
        return;
    for (int64_t i = 0; i < M; i++) {
        real *restrict c = C + i * ldc;
        if (!beta)
            memset(c, 0, sizeof(real) * (size_t)Nc);
        for (int64_t k = 0; k < K; k++) {
            const real a = alpha * A[k * lda + i];
            const real *restrict b = B + k * ldb;
            for (int64_t jj = 0; jj < Nc; jj++)
                c[jj] += a * b[jj];
        }
    }
}

/* C (M x Nc) = Aᵀ·B, a weight gradient of slice t->i's output, made by
   the slices together (bpg_out_product, gemm_tn_out.c): each publishes its
   A and B (its K samples' rows), then makes a block of C's rows or
   columns in the call's output, sum_s w_s (A_sᵀ B_s)[block] over the
   slices s in order (w_s the slice's weight, bpgs_weights: the same terms
   as the summed outputs), and waits until every slice is done reading the
   others' rows.
   Returns 0 (the slice makes its own C) for a small product, or when the
   slices disagree on what the product is: the same decision in every
   slice. */
static int bpgs_together(void *ctx, int64_t M, int64_t Nc, int64_t K, const real *A,
                         const real *B, real *C)
{
    bpgs_task *t = ctx;
    bpgs_job *j = t->job;
    const size_t S = bpgs_out_fixed(j->entry);
    if (!j->together || t->q >= BPGS_PRODUCTS || (double)M * (double)Nc < (double)j->together_min
        || C < t->out || (size_t)(C - t->out) + (size_t)(M * Nc) > S)
        return 0;
    const int q = t->q++, i = t->i, n = j->n;
    bpgs_product *p = &j->prod[q % 2];
    p->a[i] = A;
    p->b[i] = B;
    p->k[i] = K;
    p->m[i] = M;
    p->nc[i] = Nc;
    p->off[i] = (size_t)(C - t->out);
    bpgs_barrier(j);
    for (int s = 1; s < n; s++)
        if (p->m[s] != M || p->nc[s] != Nc || p->off[s] != p->off[0])
            return 0;       /* every slice sees the same, after the barrier */
    /* a block of the longer side (the BLAS packs the block's part of that
       factor and all of the other, so each slice packs the smaller one
       whole): rows (C's block contiguous), or columns of whole 64-byte
       lines */
    const int rows = M >= Nc;
    const size_t side = (size_t)(rows ? M : Nc), unit = rows ? 1 : 64 / sizeof(real);
    const int64_t lo = (int64_t)(side * (size_t)i / (size_t)n / unit * unit);
    const int64_t hi = i + 1 == n ? (int64_t)side
        : (int64_t)(side * (size_t)(i + 1) / (size_t)n / unit * unit);
    real *dst = j->out + p->off[0];
    for (int s = 0; s < n && lo < hi; s++)
        if (rows)
            bpgs_gemm_tn(hi - lo, Nc, p->k[s], (real)j->w[s], p->a[s] + lo, M, p->b[s], Nc, s,
                         dst + lo * Nc, Nc);
        else
            bpgs_gemm_tn(M, hi - lo, p->k[s], (real)j->w[s], p->a[s], M, p->b[s] + lo, Nc, s,
                         dst + lo, Nc);
    if (i == 0) {
        __atomic_add_fetch(&bpgs_products, 1, __ATOMIC_RELAXED);
        j->done_off[q] = p->off[0];
        j->done_len[q] = (size_t)(M * Nc);
        j->ndone = q + 1;
    }
    bpgs_barrier(j);
    return 1;
}
#endif

/* slice i: its inputs, the generated function, its output */
static void bpgs_run_slice(bpgs_job *j, int i, bpgs_task *task)
{
    const int64_t T = BPGF_STEPS ? BPGF_STEPS : 1;
    const int64_t a = bpgs_start(j->N, j->n, i), m = bpgs_start(j->N, j->n, i + 1) - a;
    real *ws = j->ws + j->at[i];
    size_t at[3];
    bpgs_slice_ws(j->entry, m, at);
    const bpgf_x_t *x = bpgs_rows(j->x, j->N, T, sizeof(bpgf_x_t) * (BPGF_IN_SIZE / T), a, m,
                                  ws + at[0]);
    const real *y = NULL;
    if (j->entry != BPGF_E_FORWARD)
        y = bpgs_rows(j->y, j->N, BPGF_LOSS_ALL_STEPS ? T : 1, sizeof(real) * BPGF_K, a, m,
                      ws + at[1]);
    const real *mk = NULL;
#if BPGF_N_MASKS
    if (j->mk) {        /* its rows of every step of each mask, where the call keeps them */
        real *to = ws + bpgf_mask_at(j->entry, m);
        for (int k = 0; k < BPGF_N_MASKS; k++)
            bpgs_rows(j->mk + (size_t)k * (size_t)(T * j->N), j->N, T, sizeof(real), a, m,
                      to + (size_t)k * (size_t)(T * m));
        mk = to;
    }
#endif
    real *out = ws + at[2];
    if (j->entry == BPGF_E_FORWARD && !BPGF_SEQ_OUT)
        out = j->out + (size_t)a * BPGF_K;             /* its own rows */
#ifdef BPGS_TOGETHER
    *task = (bpgs_task){j, i, 0, out};
    bpg_out_product = bpgs_together;
    bpg_out_ctx = task;
#else
    (void)task;
#endif
    bpgf_call(j->entry, m, x, mk, y, j->p, j->v, out, ws);
#ifdef BPGS_TOGETHER
    bpg_out_product = NULL;
    bpg_out_ctx = NULL;
#endif
    if (j->entry == BPGF_E_FORWARD && BPGF_SEQ_OUT)    /* its rows of every step */
        for (int64_t t = 0; t < T; t++)
            memcpy(j->out + (size_t)(t * j->N + a) * BPGF_K, out + (size_t)(t * m) * BPGF_K,
                   sizeof(real) * (size_t)m * BPGF_K);
}

/* each slice's weight in the combined output: its share of the terms the
   loss averages: samples (or samples times steps, the same share), or, for
   a loss over every step of a padded batch (lengths given), its share of
   the real (sample, step) pairs, the sum of the first mask over its rows */
static void bpgs_weights(bpgs_job *j)
{
    double total = 0, part[BPGS_MAX];
    for (int i = 0; i < j->n; i++) {
        const int64_t a = bpgs_start(j->N, j->n, i), m = bpgs_start(j->N, j->n, i + 1) - a;
        part[i] = (double)m;
#if BPGF_N_MASKS
        if (j->mk && BPGF_LOSS_ALL_STEPS) {
            part[i] = 0;
            for (int64_t t = 0; t < BPGF_STEPS; t++)
                for (int64_t n = a; n < a + m; n++)
                    part[i] += (double)j->mk[t * j->N + n];
        }
#endif
        total += part[i];
    }
    for (int i = 0; i < j->n; i++)
        j->w[i] = part[i] / total;
}

/* after `slices` slices are done here, wait for every other */
static void bpgs_arrive(bpgs_job *j, int slices)
{
    pthread_mutex_lock(&j->lock);
    j->done += slices;
    if (j->done == j->n)
        pthread_cond_broadcast(&j->all_done);
    while (j->done < j->n)
        pthread_cond_wait(&j->all_done, &j->lock);
    pthread_mutex_unlock(&j->lock);
}

/* entries [lo, hi) of the weighted sum of the slices' outputs */
static BPG_ENTRY void bpgs_sum(bpgs_job *j, size_t lo, size_t hi)
{
    for (int i = 0; i < j->n && lo < hi; i++) {
        size_t at[3];
        const int64_t a = bpgs_start(j->N, j->n, i), m = bpgs_start(j->N, j->n, i + 1) - a;
        bpgs_slice_ws(j->entry, m, at);
        const real w = (real)j->w[i];
        const real *restrict o = j->ws + j->at[i] + at[2];
        real *restrict out = j->out;
        if (i == 0) {
#pragma omp simd
            for (size_t k = lo; k < hi; k++)
                out[k] = w * o[k];
        } else {
#pragma omp simd
            for (size_t k = lo; k < hi; k++)
                out[k] += w * o[k];
        }
    }
}

/* part i of n of the weighted sum of the slices' outputs: entries
   [S*i/n, S*(i+1)/n) (rounded to 64-byte lines), each the sum over the
   slices in order, but for the ranges the slices made together (already
   the call's, bpgs_together); then whether the part (all of it) is finite,
   so that the caller need not read the whole output again */
static void bpgs_reduce(bpgs_job *j, int part)
{
    const size_t S = bpgs_out_fixed(j->entry), unit = 64 / sizeof(real);
    const size_t lo = S * (size_t)part / (size_t)j->n / unit * unit;
    const size_t hi = part + 1 == j->n ? S : S * (size_t)(part + 1) / (size_t)j->n / unit * unit;
    size_t from = lo;
    while (from < hi) {
        size_t to = hi, next = hi;   /* [from, to) summed here, then on from next */
#ifdef BPGS_TOGETHER
        for (int q = 0; q < j->ndone; q++) {    /* the first range made together ahead */
            const size_t a = j->done_off[q], b = a + j->done_len[q];
            if (b > from && a < to) {
                to = a > from ? a : from;
                next = b;
            }
        }
#endif
        bpgs_sum(j, from, to);
        from = next > to ? next : to;
    }
    j->finite[part] = bpgf_finite(j->out + lo, hi - lo);
}

static void *bpgs_thread(void *arg)
{
    bpgs_task *task = arg;
    while (!__atomic_load_n(&task->job->go, __ATOMIC_ACQUIRE))  /* every thread made */
        sched_yield();
    bpgs_run_slice(task->job, task->i, task);
    bpgs_arrive(task->job, 1);
    if (task->job->entry != BPGF_E_FORWARD)
        bpgs_reduce(task->job, task->i);
    return NULL;
}

/* the call split into n slices over ws (laid out by bpgs_ws_need); 1 when
   its output is known finite (the summed outputs) */
static int bpgs_split(bpgs_job *j)
{
    pthread_t tid[BPGS_MAX];
    bpgs_task task[BPGS_MAX];
    int made[BPGS_MAX] = {0}, here = 1;
    size_t offset = 0;
    for (int i = 0; i < j->n; i++) {
        j->at[i] = offset;
        offset += bpgs_slice_ws(j->entry, bpgs_start(j->N, j->n, i + 1) - bpgs_start(j->N, j->n, i),
                                NULL);
    }
    bpgs_weights(j);
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->all_done, NULL);
    j->done = 0;
    j->go = 0;
    int all = 1;
    for (int i = 1; i < j->n; i++) {
        task[i] = (bpgs_task){j, i, 0, NULL};
        made[i] = pthread_create(&tid[i], NULL, bpgs_thread, &task[i]) == 0;
        all &= made[i];
    }
#ifdef BPGS_TOGETHER
    /* together only when each slice has its own thread (the barriers) */
    j->together = all && j->n <= BPGS_TOGETHER_SLICES && j->entry != BPGF_E_FORWARD;
    j->together_min = __atomic_load_n(&bpgs_together_min, __ATOMIC_RELAXED);
    j->ndone = 0;
    j->bar_count = j->bar_gen = 0;
    pthread_cond_init(&j->turn, NULL);
#else
    (void)all;
#endif
    __atomic_store_n(&j->go, 1, __ATOMIC_RELEASE);
    bpgs_run_slice(j, 0, &task[0]);
    for (int i = 1; i < j->n; i++)
        if (!made[i]) {
            bpgs_run_slice(j, i, &task[i]);
            here++;
        }
    bpgs_arrive(j, here);
    if (j->entry != BPGF_E_FORWARD)
        for (int i = 0; i < j->n; i++)
            if (i == 0 || !made[i])
                bpgs_reduce(j, i);
    for (int i = 1; i < j->n; i++)
        if (made[i])
            pthread_join(tid[i], NULL);
#ifdef BPGS_TOGETHER
    pthread_cond_destroy(&j->turn);
#endif
    pthread_cond_destroy(&j->all_done);
    pthread_mutex_destroy(&j->lock);
    int finite = j->entry != BPGF_E_FORWARD;
    for (int i = 0; i < j->n && finite; i++)
        finite = j->finite[i];
    return finite;
}

/* The workspace (elements) bpg_entry_run wants for N samples at the
   current count; 0 on overflow. */
size_t bpg_entry_ws(int entry, int64_t N)
{
    const int n = bpg_get_threads();
    const size_t split = bpgs_ws_need(entry, N, bpgs_work(entry, N) >= bpgs_min_work ? n : 1);
    const size_t whole = bpgs_ws_need(entry, N, 1);
    return split && whole ? (split > whole ? split : whole) : 0;
}

/* One call of entry point `entry` (0 forward, 1 loss, 2 loss_and_grad,
   3 hvp) on N samples: x and y as the generated function reads them (x
   time-major for sequences, y one-hot or real, time-major when the loss
   reads every step), the parameters p (and hvp's v) as pointer arrays, the
   output `out` as the generated function writes it, `ws` a workspace of
   `cap` elements (at least bpgs_ws_need(entry, N, 1)).  Takes the call's
   turn (the thread rule), runs it split, with the BLAS's threads, or on
   this thread alone, and gives the turn back.  Call it without the GIL.
   Returns 1 when it found the output finite (a split call's summed
   outputs, read by its threads), else 0: not known. */
int bpg_entry_run(int entry, int64_t N, const void *x, const real *mk, const real *y,
                   const real *const *p, const real *const *v, real *out, real *ws, size_t cap)
{
    const double work = bpgs_work(entry, N);
    /* the count decides: split when the slices are large enough */
    const int want = bpg_get_threads();
    const int large = work >= bpgs_min_work;
    const int split = large && want > 1 && bpgs_slices(N, want) > 1;
    const int n = bpg_threads_take(large, !split);
    const int s = n > 1 ? bpgs_slices(N, n) : 1;
    if (s > 1 && split) {
        const size_t need = bpgs_ws_need(entry, N, s);
        real *own = NULL;
        if (need > cap && posix_memalign((void **)&own, 64, need * sizeof(real)) != 0)
            own = NULL;
        if (need <= cap || own) {
            bpgs_job j = {.entry = entry, .n = s, .N = N, .x = x, .mk = mk, .y = y, .p = p, .v = v,
                          .out = out, .ws = own ? own : ws};
            const int finite = bpgs_split(&j);
            __atomic_add_fetch(&bpgs_calls, 1, __ATOMIC_RELAXED);
            free(own);
            bpg_threads_leave(1);
            return finite;
        }
    }
    if (n > 1 && split)     /* a large call after all unsplit: the BLAS's threads */
        bpg_threads_apply(n);
    bpgf_call(entry, N, x, mk, y, p, v, out, ws);
    bpg_threads_leave(n > 1);
    return 0;
}

/* 1 when entry point `entry` is compiled here (bpgf_call can run it) */
int bpg_entry_have(int entry)
{
    return entry >= 0 && entry < BPGF_ENTRIES && bpgf_enabled[entry];
}
