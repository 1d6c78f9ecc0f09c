/* The exported functions' own steps around the generated ones (bpgen
   export): checks of integer inputs (a value out of range would index out
   of bounds) and the conversions the Python module's API makes in NumPy
   (runtime/api.py: _check_x, _check_y, _masks, forward): a sequence's x and
   y to time-major rows (step t of sample i at row t*n + i), labels to
   one-hot rows, the per-(sample, step) masks from the lengths.  Static: no
   symbol leaves the file.  Before this file: the element type `real` and
   bpgx_x_t, x's element type. */

/* every length in [1, T] */
static inline int bpgx_lengths_ok(const int32_t *lengths, int64_t n, int64_t T)
{
    for (int64_t i = 0; i < n; i++)
        if (lengths[i] < 1 || lengths[i] > T)
            return 0;
    return 1;
}

/* every label in [0, K) */
static inline int bpgx_labels_ok(const int32_t *labels, int64_t count, int64_t K)
{
    for (int64_t i = 0; i < count; i++)
        if (labels[i] < 0 || labels[i] >= K)
            return 0;
    return 1;
}

/* every token id in [0, bound) (an unsigned x never below 0) */
static inline int bpgx_tokens_ok(const bpgx_x_t *x, int64_t count, int64_t bound)
{
    for (int64_t i = 0; i < count; i++)
        if (!(x[i] >= 0 && (int64_t)x[i] < bound))
            return 0;
    return 1;
}

/* x (n, T, C) -> time-major (T*n, C) */
static inline void bpgx_x_time_major(const bpgx_x_t *src, int64_t n, int64_t T, int64_t C,
                                     bpgx_x_t *dst)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++)
            memcpy(dst + (t * n + i) * C, src + (i * T + t) * C, (size_t)C * sizeof *dst);
}

/* real targets (n, T, C) -> time-major (T*n, C) */
static inline void bpgx_time_major(const real *src, int64_t n, int64_t T, int64_t C, real *dst)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++)
            memcpy(dst + (t * n + i) * C, src + (i * T + t) * C, (size_t)C * sizeof *dst);
}

/* labels (n, T) (T = 1: (n,)) -> one-hot rows (T*n, K), time-major; every
   label checked in [0, K) first */
static inline void bpgx_one_hot(const int32_t *labels, int64_t n, int64_t T, int64_t K,
                                real *dst)
{
    memset(dst, 0, (size_t)(T * n * K) * sizeof *dst);
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++)
            dst[(t * n + i) * K + labels[i * T + t]] = 1;
}

/* The masks, time-major (T*n): mask 1 at the steps before each sample's
   length (every step when lengths is NULL), 0 at its padding; with
   truncated BPTT every k steps (k > 0), cut 0 where a reversed loop's
   gradient is cut for that sample: every k steps counted back from its
   last real step (runtime/api.py's _masks). */
static inline void bpgx_masks(const int32_t *lengths, int64_t n, int64_t T, int64_t k,
                              real *mask, real *cut)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t last = (lengths ? lengths[i] : T) - 1;
            mask[t * n + i] = t <= last ? 1 : 0;
            if (k > 0)
                cut[t * n + i] = t <= last && (last - t) % k == 0 ? 0 : 1;
        }
}

/* a sequence's outputs, time-major (T*n, K) -> (n, T, K), 0 at padded
   steps (mask 0) */
static inline void bpgx_batch_first(const real *src, const real *mask, int64_t n, int64_t T,
                                    int64_t K, real *dst)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++) {
            const real *s = src + (t * n + i) * K;
            real *d = dst + (i * T + t) * K;
            for (int64_t j = 0; j < K; j++)
                d[j] = mask[t * n + i] > 0 ? s[j] : 0;
        }
}
