/* Per-sample gradient norms and DP-SGD's clipped gradient, from the factors
   the grad_terms program leaves (bpgen/derivation.py _grad_terms): a factor
   F is a (rows·N x c) matrix whose rows belong to samples, time-major
   (row t·N + n: a sequence's steps, `time` = 1) or sample-major (row
   n·rows + p: an image's pixels, `time` = 0).  Sample n's rows are then
   the matrix F_n = rows x c starting at bpg_ps_rows(F, ...) with its rows
   bpg_ps_ld(...) elements apart: a BLAS operand as it lies, never copied.
   The squared norms accumulate into sq (N) without the factor N² (the
   deltas hold the batch's 1/N); bpg_ps_norms puts it back.  The generated
   per_sample_grad_norms and clipped_grad call these once per parameter in
   the form the generator chose (Gram or formed, stated next to each call);
   nothing here allocates: scratch is the caller's workspace. */
#include <float.h>

static inline const real *bpg_ps_rows(const real *F, int64_t rows, int time, int64_t c,
                                      int64_t n)
{
    return F + (time ? n * c : n * rows * c);
}

static inline int64_t bpg_ps_ld(int64_t N, int time, int64_t c)
{
    return time ? N * c : c;
}

/* Its own function (with its own copies per CPU, BPG_ENTRY), not inlined:
   inlined into bpg_ps_form_product (which GCC 12 -O2 does not inline, so
   that its one copy is the baseline one), the omp simd reduction's
   accumulator stayed on the stack, a store-to-load chain per 2 elements:
   the digits CNN's per-sample norms took 200 µs where they now take ~85
   (docs/performance.md, "Per-sample gradients"). */
static BPG_ENTRY real bpg_ps_dot(int64_t k, const real *restrict a, const real *restrict b)
{
    real acc = 0;
    #pragma omp simd reduction(+:acc)
    for (int64_t j = 0; j < k; j++) acc += a[j] * b[j];
    return acc;
}

/* One row per sample, Gram form: ‖u_nᵀv_n‖² = ‖u_n‖²·‖v_n‖² */
static inline void bpg_ps_sq_outer(int64_t N, int64_t a, const real *restrict U, int64_t d,
                                   const real *restrict V, real *restrict sq)
{
    for (int64_t n = 0; n < N; n++)
        sq[n] += bpg_ps_dot(a, U + n * a, U + n * a) * bpg_ps_dot(d, V + n * d, V + n * d);
}

/* Every row's squares, summed per sample: a position table's per-step rows
   (formed: sample n's gradient is its rows), or a bias over one row per
   sample (1ᵀ·d_n = d_n) */
static inline void bpg_ps_sq_rows(int64_t N, int64_t rows, int64_t d, const real *restrict V,
                                  real *restrict sq)
{
    for (int64_t i = 0; i < rows * N; i++)
        sq[i % N] += bpg_ps_dot(d, V + i * d, V + i * d);
}

/* G (N x rows x rows): every sample's Gram matrix F_n·F_nᵀ */
static inline void bpg_ps_gram(int64_t N, int64_t rows, int time, int64_t c, const real *F,
                               real *restrict G)
{
    const int64_t ld = bpg_ps_ld(N, time, c);
    for (int64_t n = 0; n < N; n++) {
        const real *Fn = bpg_ps_rows(F, rows, time, c, n);
        real *restrict Gn = G + n * rows * rows;
        if (bpg_blas_gemm_ld(0, 1, rows, rows, c, Fn, ld, Fn, ld, Gn, rows, BPG_BLAS_MIN_NT))
            continue;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j <= i; j++)
                Gn[i * rows + j] = Gn[j * rows + i] = bpg_ps_dot(c, Fn + i * ld, Fn + j * ld);
    }
}

/* Gram form with several rows: ‖U_nᵀV_n‖² = ⟨U_nU_nᵀ, V_nV_nᵀ⟩ (bpg_ps_gram's) */
static inline void bpg_ps_sq_grams(int64_t N, int64_t rows, const real *restrict GU,
                                   const real *restrict GV, real *restrict sq)
{
    for (int64_t n = 0; n < N; n++)
        sq[n] += bpg_ps_dot(rows * rows, GU + n * rows * rows, GV + n * rows * rows);
}

/* Every sample's gradient formed, a product: U_nᵀ·V_n (a x d) at g + n·gs
   (gs = 0: one scratch, reused), its squared norm added to sq (unless NULL) */
static inline void bpg_ps_form_product(int64_t N, int64_t rows, int time, int64_t a,
                                       const real *U, int64_t d, const real *V, real *g,
                                       int64_t gs, real *restrict sq)
{
    const int64_t lu = bpg_ps_ld(N, time, a), lv = bpg_ps_ld(N, time, d);
    for (int64_t n = 0; n < N; n++) {
        const real *Un = bpg_ps_rows(U, rows, time, a, n);
        const real *Vn = bpg_ps_rows(V, rows, time, d, n);
        real *restrict gn = g + n * gs;
        if (!bpg_blas_gemm_ld(1, 0, a, d, rows, Un, lu, Vn, lv, gn, d, BPG_BLAS_MIN_TN)) {
            for (int64_t k = 0; k < a * d; k++) gn[k] = 0;
            for (int64_t p = 0; p < rows; p++)
                for (int64_t i = 0; i < a; i++) {
                    const real u = Un[p * lu + i];
                    real *restrict gi = gn + i * d;
                    const real *restrict vp = Vn + p * lv;
                    #pragma omp simd
                    for (int64_t j = 0; j < d; j++) gi[j] += u * vp[j];
                }
        }
        if (sq)
            sq[n] += bpg_ps_dot(a * d, gn, gn);
    }
}

/* Every sample's gradient formed, a column sum: 1ᵀ·V_n (d) at g + n·gs,
   its squared norm added to sq (unless NULL) */
static inline void bpg_ps_form_colsum(int64_t N, int64_t rows, int time, int64_t d,
                                      const real *V, real *g, int64_t gs, real *restrict sq)
{
    const int64_t lv = bpg_ps_ld(N, time, d);
    for (int64_t n = 0; n < N; n++) {
        const real *Vn = bpg_ps_rows(V, rows, time, d, n);
        real *restrict gn = g + n * gs;
        for (int64_t j = 0; j < d; j++) gn[j] = 0;
        for (int64_t p = 0; p < rows; p++) {
            const real *restrict vp = Vn + p * lv;
            #pragma omp simd
            for (int64_t j = 0; j < d; j++) gn[j] += vp[j];
        }
        if (sq)
            sq[n] += bpg_ps_dot(d, gn, gn);
    }
}

/* Every sample's embedding-table gradient formed: onehot(ids_n)ᵀ·V_n
   (size x d) at g + n·gs, its squared norm added to sq (unless NULL); ids
   as the generated code checked them (in [0, size)) */
static inline void bpg_ps_form_scatter(int64_t N, int64_t rows, int time, const int64_t *ids,
                                       int64_t size, int64_t d, const real *V, real *g,
                                       int64_t gs, real *restrict sq)
{
    const int64_t lv = bpg_ps_ld(N, time, d), li = time ? N : 1;
    for (int64_t n = 0; n < N; n++) {
        const real *Vn = bpg_ps_rows(V, rows, time, d, n);
        const int64_t *idn = ids + (time ? n : n * rows);
        real *restrict gn = g + n * gs;
        for (int64_t k = 0; k < size * d; k++) gn[k] = 0;
        for (int64_t p = 0; p < rows; p++) {
            real *restrict gi = gn + idn[p * li] * d;
            const real *restrict vp = Vn + p * lv;
            #pragma omp simd
            for (int64_t j = 0; j < d; j++) gi[j] += vp[j];
        }
        if (sq)
            sq[n] += bpg_ps_dot(size * d, gn, gn);
    }
}

/* Every sample's position-table gradient (size x d) at g + n·size·d: its
   rows of the time-major V (rows steps), the rows after them 0 */
static inline void bpg_ps_form_steps(int64_t N, int64_t rows, int64_t size, int64_t d,
                                     const real *restrict V, real *restrict g)
{
    for (int64_t n = 0; n < N; n++) {
        real *restrict gn = g + n * size * d;
        for (int64_t k = 0; k < size * d; k++) gn[k] = 0;
        for (int64_t t = 0; t < rows; t++)
            for (int64_t j = 0; j < d; j++) gn[t * d + j] = V[(t * N + n) * d + j];
    }
}

/* a (k) *= s */
static inline void bpg_ps_scale(int64_t k, real s, real *restrict a)
{
    #pragma omp simd
    for (int64_t i = 0; i < k; i++) a[i] *= s;
}

/* An embedding table, Gram form: ⟨onehot_n onehot_nᵀ, V_nV_nᵀ⟩, the dot
   products of sample n's rows whose ids are equal */
static inline void bpg_ps_sq_scatter_gram(int64_t N, int64_t rows, int time, const int64_t *ids,
                                          int64_t d, const real *V, real *restrict sq)
{
    const int64_t lv = bpg_ps_ld(N, time, d), li = time ? N : 1;
    for (int64_t n = 0; n < N; n++) {
        const real *Vn = bpg_ps_rows(V, rows, time, d, n);
        const int64_t *idn = ids + (time ? n : n * rows);
        real acc = 0;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < rows; j++)
                if (idn[i * li] == idn[j * li])
                    acc += bpg_ps_dot(d, Vn + i * lv, Vn + j * lv);
        sq[n] += acc;
    }
}

/* norms (N) = N·√sq (sq in place; a rounding below 0 is 0) */
static inline void bpg_ps_norms(int64_t N, real *restrict sq)
{
    for (int64_t n = 0; n < N; n++)
        sq[n] = (real)N * sqrt(sq[n] > 0 ? sq[n] : 0);
}

/* DP-SGD's clip factors c_n = min(1, max_norm / norm_n) (a norm of 0, or
   below the smallest normal number, is not clipped); 1 when any is below 1 */
static inline int bpg_ps_clip_factors(int64_t N, real max_norm, const real *restrict norms,
                                      real *restrict c)
{
    const real tiny = sizeof(real) == sizeof(float) ? FLT_MIN : DBL_MIN;
    int clipped = 0;
    for (int64_t n = 0; n < N; n++) {
        const real f = max_norm / (norms[n] > tiny ? norms[n] : tiny);
        c[n] = f < 1 ? f : 1;
        clipped |= f < 1;
    }
    return clipped;
}

/* diag(w)·F in place, w each row's sample's c_n: the factor that carries
   the clipping in Uᵀ·diag(w)·V */
static inline void bpg_ps_scale_rows(int64_t N, int64_t rows, int time, int64_t c, real *F,
                                     const real *restrict w)
{
    for (int64_t i = 0; i < rows * N; i++) {
        const real s = w[time ? i % N : i / rows];
        real *restrict f = F + i * c;
        #pragma omp simd
        for (int64_t j = 0; j < c; j++) f[j] *= s;
    }
}

/* out (size x d) = onehot(ids)ᵀ·V over all R rows: an embedding table's
   (scaled) gradient */
static inline void bpg_ps_scatter_sum(int64_t R, const int64_t *restrict ids, int64_t size,
                                      int64_t d, const real *restrict V, real *restrict out)
{
    for (int64_t k = 0; k < size * d; k++) out[k] = 0;
    for (int64_t i = 0; i < R; i++) {
        real *restrict o = out + ids[i] * d;
        const real *restrict v = V + i * d;
        #pragma omp simd
        for (int64_t j = 0; j < d; j++) o[j] += v[j];
    }
}

/* out (size x d): row t the sum over samples of step t's rows of the
   time-major V (rows steps), the rows after them 0: a position table's */
static inline void bpg_ps_steps_sum(int64_t N, int64_t rows, int64_t size, int64_t d,
                                    const real *restrict V, real *restrict out)
{
    for (int64_t k = 0; k < size * d; k++) out[k] = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t n = 0; n < N; n++) {
            real *restrict o = out + t * d;
            const real *restrict v = V + (t * N + n) * d;
            #pragma omp simd
            for (int64_t j = 0; j < d; j++) o[j] += v[j];
        }
}
