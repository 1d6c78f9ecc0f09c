/* The CPython entry points of a generated C module: forward, loss and
   loss_and_grad called straight from Python (METH_FASTCALL), without the
   Python wrapper's per-call work.  Copied verbatim after the generated
   functions and this module's constants (BPGF_* macros, bpgf_* tables and
   the adapter bpgf_call, see bpgen/backends/c/fastcall.py); compiled into
   the cffi extension, whose own code has included Python.h.

   Each entry point handles the common case only: parameters in an exact
   dict with exactly the expected keys, every array an exact numpy.ndarray
   of the module's dtype (x: of the input kind's element type, bpgf_x_t),
   native byte order, C-contiguous and aligned, of the right shape; x
   finite (integer x: in [0, BPGF_X_BOUND)) with N >= 1 within the batch-size limit
   (MAX_RESULT_BYTES, read at every call); labels of an integer dtype in
   [0, K) (turned into one-hot rows here) when the loss's targets are
   labels (BPGF_TARGET_LABELS), else finite float targets (within the
   loss's range, if it has one); and a finite result.  Anything else
   calls the module's Python implementation of the same function with the
   same arguments, which then raises its usual ValueError (or returns what
   it returns), so every message stays the Python path's.  The checks here
   only decide "handled here or not"; they never raise.

   The shapes compared are this module's compile-time constants, so the
   generated function reads and writes only what its signature promises.
   The calling thread's workspace (one buffer per thread and module, apart
   from the Python path's, grown to the largest batch seen, freed at thread
   exit or by release_workspace) also holds the one-hot labels and, for
   sequences, x and y time-major.  Gradients are views of one fresh array
   per call.  No Python code runs between taking the workspace and its last
   use, so a call cannot see it replaced under it.

   (Why one ~700-line file: it is one translation unit of static functions
   pasted verbatim into each module; its parts, argument checks, target and
   input conversion and the entry points, share the module's macros and are
   tested together through the entry points, tests/test_fastcall.py.)

   (Longer than the ~500 lines a file here usually has: the workspace, the
   checks, one call and the installation are one unit, each a short
   function, and none is used elsewhere.) */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <pthread.h>
#include <stdlib.h>

#ifdef BPG_FLOAT32
#define BPGF_TYPENUM NPY_FLOAT
#else
#define BPGF_TYPENUM NPY_DOUBLE
#endif

/* the entry points (the order of fastcall.py's ENTRIES and bpgf_call's) */
enum { BPGF_E_FORWARD, BPGF_E_LOSS, BPGF_E_LOSS_AND_GRAD, BPGF_E_HVP, BPGF_ENTRIES };
/* the GIL is let go around the generated function from N *
   BPGF_WORK_PER_SAMPLE >= this (letting it go and taking it back costs
   about as much as a few hundred multiply-adds) */
#ifndef BPGF_GIL_WORK
#define BPGF_GIL_WORK 32768.0
#endif
static const char *const bpgf_names[BPGF_ENTRIES] = {"forward", "loss", "loss_and_grad",
                                                     "hvp"};
static const int bpgf_enabled[BPGF_ENTRIES] = {BPGF_HAVE_FORWARD, BPGF_HAVE_LOSS,
                                               BPGF_HAVE_LOSS_AND_GRAD, BPGF_HAVE_HVP};
/* the calls themselves, split across threads or not (runtime/split.c,
   pasted after this file) */
size_t bpg_entry_ws(int entry, int64_t N);
int bpg_entry_run(int entry, int64_t N, const void *x, const real *mk, const real *y,
                  const real *const *p,
                   const real *const *v, real *out, real *ws, size_t cap);
static double bpgs_min_work;    /* the least work of a large call (split.c) */

/* calls handled here and calls handed to the Python path, per entry point
   (counted with the GIL held; read by the module's tests) */
static int64_t bpgf_counts[BPGF_ENTRIES][2];

int64_t bpgf_count(int entry, int fell_back)
{
    if (entry < 0 || entry >= BPGF_ENTRIES)
        return -1;
    return bpgf_counts[entry][fell_back != 0];
}

/* ---- the calling thread's workspace ------------------------------------
   One block per thread: a 64-byte header holding the capacity (elements),
   then the data, 64-byte aligned.  Only the owning thread touches it. */
#define BPGF_HEAD 64
static pthread_key_t bpgf_ws_key;
static int bpgf_ws_key_ok;
static pthread_once_t bpgf_ws_once = PTHREAD_ONCE_INIT;

static void bpgf_ws_free(void *block)
{
    free(block);
}

static void bpgf_ws_make_key(void)
{
    bpgf_ws_key_ok = pthread_key_create(&bpgf_ws_key, bpgf_ws_free) == 0;
}

/* The calling thread's workspace of at least `need` elements, or NULL. */
static real *bpgf_workspace(size_t need)
{
    if (!bpgf_ws_key_ok)
        return NULL;
    char *block = pthread_getspecific(bpgf_ws_key);
    if (block && *(size_t *)block >= need)
        return (real *)(block + BPGF_HEAD);
    if (need > (SIZE_MAX - BPGF_HEAD) / sizeof(real))
        return NULL;
    void *fresh = NULL;
    if (posix_memalign(&fresh, 64, BPGF_HEAD + need * sizeof(real)) != 0)
        return NULL;
    if (pthread_setspecific(bpgf_ws_key, fresh) != 0) {
        free(fresh);
        return NULL;
    }
    free(block);
    *(size_t *)fresh = need;
    return (real *)((char *)fresh + BPGF_HEAD);
}

/* Free the calling thread's workspace (release_workspace()). */
void bpgf_release_workspace(void)
{
    if (!bpgf_ws_key_ok)
        return;
    void *block = pthread_getspecific(bpgf_ws_key);
    if (block && pthread_setspecific(bpgf_ws_key, NULL) == 0)
        free(block);
}

/* ---- checks: 1 = handled here, 0 = the Python path decides ------------- */

/* a += b*c without overflow (sizes in elements); 0 on overflow */
static int bpgf_madd(size_t *a, size_t b, size_t c)
{
    size_t bc;
    if (__builtin_mul_overflow(b, c, &bc) || __builtin_add_overflow(*a, bc, a))
        return 0;
    return 1;
}

/* `size` rounded up to whole 64-byte lines; 0 on overflow */
static int bpgf_round(size_t *size)
{
    size_t unit = 64 / sizeof(real);
    if (*size > SIZE_MAX - unit)
        return 0;
    *size = (*size + unit - 1) / unit * unit;
    return 1;
}

/* an exact ndarray of NumPy type `typenum`, native byte order, C-contiguous,
   aligned, with `ndim` axes: the first `lead` of them any, then `dims` */
static int bpgf_typed_array(PyObject *o, int typenum, int ndim, int lead, const int64_t *dims)
{
    if (Py_TYPE(o) != &PyArray_Type)
        return 0;
    PyArrayObject *a = (PyArrayObject *)o;
    const int need = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED;
    if (PyArray_TYPE(a) != typenum || !PyArray_ISNOTSWAPPED(a)
        || (PyArray_FLAGS(a) & need) != need || PyArray_NDIM(a) != ndim)
        return 0;
    const npy_intp *d = PyArray_DIMS(a);
    for (int i = lead; i < ndim; i++)
        if (d[i] != dims[i - lead])
            return 0;
    return 1;
}

/* the same, of the module's dtype */
static int bpgf_real_array(PyObject *o, int ndim, int lead, const int64_t *dims)
{
    return bpgf_typed_array(o, BPGF_TYPENUM, ndim, lead, dims);
}

/* every one of n entries finite (a - a is 0, not NaN); an OR of flags
   rather than a sum, which would wait on each add's latency; one copy per
   vector width, like the generated functions */
static BPG_ENTRY int bpgf_finite(const real *a, size_t n)
{
    int bad = 0;
#pragma omp simd reduction(|:bad)
    for (size_t i = 0; i < n; i++)
        bad |= !(a[i] - a[i] == 0);
    return !bad;
}

/* x's values as the input kind says (fastcall.py's bpgf_x_t, BPGF_X_TYPENUM
   and BPGF_X_BOUND): integers in [0, BPGF_X_BOUND) (a negative one, made
   unsigned, is larger), or finite reals */
#ifdef BPGF_X_BOUND
static BPG_ENTRY int bpgf_x_valid(const bpgf_x_t *a, size_t n)
{
    int bad = 0;
#pragma omp simd reduction(|:bad)
    for (size_t i = 0; i < n; i++)
        bad |= !((uint64_t)a[i] < (uint64_t)BPGF_X_BOUND);
    return !bad;
}
#else
#define bpgf_x_valid bpgf_finite
#endif
/* x's elements in units of real (the workspace's), rounded up */
#define BPGF_X_REALS ((sizeof(bpgf_x_t) + sizeof(real) - 1) / sizeof(real))

/* every one of n real targets as the loss takes them: finite, and in its
   [BPGF_TARGET_LO, BPGF_TARGET_HI] when it has a range (BPGF_TARGET_RANGE) */
static BPG_ENTRY int bpgf_targets_ok(const real *a, size_t n)
{
    int bad = 0;
#pragma omp simd reduction(|:bad)
    for (size_t i = 0; i < n; i++)
#if BPGF_TARGET_RANGE
        bad |= !(a[i] >= (real)BPGF_TARGET_LO && a[i] <= (real)BPGF_TARGET_HI);  /* not NaN */
#else
        bad |= !(a[i] - a[i] == 0);
#endif
    return !bad;
}

/* Labels (an exact integer ndarray, native order, C-contiguous, aligned,
   of shape (N,) or (N, T)) into one-hot rows of K in `onehot` (rows N, or
   T*N time-major: row t*N + n is sample n's step t); 0 when the dtype is
   not an integer one or a label lies outside [0, K).  `onehot` holds
   N*T*K elements (T = 1 for labels of shape (N,)). */
#define BPGF_ONEHOT_LOOP(ctype, below_zero)                                      \
    {                                                                           \
        const ctype *lab = (const ctype *)PyArray_DATA(a);                      \
        for (int64_t n = 0; n < N; n++)                                         \
            for (int64_t t = 0; t < T; t++) {                                   \
                ctype v = lab[n * T + t];                                       \
                if (below_zero(v) || (uint64_t)v >= (uint64_t)BPGF_K)           \
                    return 0;                                                   \
                onehot[((size_t)t * N + n) * BPGF_K + (size_t)v] = 1;           \
            }                                                                   \
        return 1;                                                               \
    }
#define BPGF_NEG(v) ((v) < 0)
#define BPGF_NEVER(v) 0

static int bpgf_labels(PyObject *o, int64_t N, int64_t T, real *onehot)
{
    if (Py_TYPE(o) != &PyArray_Type)
        return 0;
    PyArrayObject *a = (PyArrayObject *)o;
    const int need = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED;
    const int ndim = BPGF_LOSS_ALL_STEPS ? 2 : 1;
    if (!PyArray_ISNOTSWAPPED(a) || (PyArray_FLAGS(a) & need) != need
        || PyArray_NDIM(a) != ndim || PyArray_DIMS(a)[0] != N
        || (ndim == 2 && PyArray_DIMS(a)[1] != T))
        return 0;
    memset(onehot, 0, sizeof(real) * (size_t)N * (size_t)T * BPGF_K);
    switch (PyArray_TYPE(a)) {
    case NPY_BYTE: BPGF_ONEHOT_LOOP(npy_byte, BPGF_NEG)
    case NPY_SHORT: BPGF_ONEHOT_LOOP(npy_short, BPGF_NEG)
    case NPY_INT: BPGF_ONEHOT_LOOP(npy_int, BPGF_NEG)
    case NPY_LONG: BPGF_ONEHOT_LOOP(npy_long, BPGF_NEG)
    case NPY_LONGLONG: BPGF_ONEHOT_LOOP(npy_longlong, BPGF_NEG)
    case NPY_UBYTE: BPGF_ONEHOT_LOOP(npy_ubyte, BPGF_NEVER)
    case NPY_USHORT: BPGF_ONEHOT_LOOP(npy_ushort, BPGF_NEVER)
    case NPY_UINT: BPGF_ONEHOT_LOOP(npy_uint, BPGF_NEVER)
    case NPY_ULONG: BPGF_ONEHOT_LOOP(npy_ulong, BPGF_NEVER)
    case NPY_ULONGLONG: BPGF_ONEHOT_LOOP(npy_ulonglong, BPGF_NEVER)
    default:
        return 0;
    }
}

/* (N, T, C) batch-first into (T*N, C) time-major */
static void bpgf_time_major(const real *src, int64_t N, int64_t T, int64_t C, real *dst)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++)
            memcpy(dst + (t * N + n) * C, src + (n * T + t) * C, sizeof(real) * (size_t)C);
}

/* x (N, T, C) batch-first into (T*N, C) time-major, of x's element type */
static void bpgf_x_time_major(const bpgf_x_t *src, int64_t N, int64_t T, int64_t C,
                              bpgf_x_t *dst)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++)
            memcpy(dst + (t * N + n) * C, src + (n * T + t) * C,
                   sizeof(bpgf_x_t) * (size_t)C);
}

/* ---- one call ---------------------------------------------------------- */

typedef struct {
    PyObject *fallback;         /* the Python implementation (borrowed from the state) */
    PyObject *globals;          /* the module's dict (borrowed) */
    PyObject *keys;             /* tuple of interned parameter keys (borrowed) */
} bpgf_state;

/* the state tuple each entry point holds: (Python implementation, module
   dict, parameter keys) */
static int bpgf_unpack(PyObject *self, bpgf_state *st)
{
    if (!PyTuple_CheckExact(self) || PyTuple_GET_SIZE(self) != 3)
        return 0;
    st->fallback = PyTuple_GET_ITEM(self, 0);
    st->globals = PyTuple_GET_ITEM(self, 1);
    st->keys = PyTuple_GET_ITEM(self, 2);
    return PyDict_Check(st->globals) && PyTuple_CheckExact(st->keys)
        && PyTuple_GET_SIZE(st->keys) == BPGF_NPARAM_ARRAYS;
}

static PyObject *bpgf_max_bytes_name;   /* "MAX_RESULT_BYTES", interned */

/* the batch-size limit: N samples of BPGF_BYTES_PER_SAMPLE bytes must not
   exceed the module's MAX_RESULT_BYTES (an int; anything else: Python path) */
static int bpgf_batch_fits(PyObject *globals, int64_t N)
{
    PyObject *limit = PyDict_GetItemWithError(globals, bpgf_max_bytes_name);
    if (!limit || !PyLong_CheckExact(limit)) {
        PyErr_Clear();
        return 0;
    }
    int overflow = 0;
    long long max_bytes = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (max_bytes == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    int64_t need;
    if (__builtin_mul_overflow(N, (int64_t)BPGF_BYTES_PER_SAMPLE, &need))
        return 0;
    return overflow > 0 || (overflow == 0 && need <= max_bytes);
}

static PyObject *bpgf_fallback(int entry, const bpgf_state *st, PyObject *const *args,
                               size_t nargsf, PyObject *kwnames)
{
    bpgf_counts[entry][1]++;
    return PyObject_Vectorcall(st->fallback, args, nargsf, kwnames);
}

/* views of `base`'s data from element `offset` on, shaped like the
   parameters, in a fresh dict keyed like them; NULL with an exception set */
static PyObject *bpgf_grads_dict(PyObject *keys, PyArrayObject *base, size_t offset)
{
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    real *data = (real *)PyArray_DATA(base) + offset;
    for (int i = 0; i < BPGF_NPARAM_ARRAYS; i++) {
        npy_intp dims[BPGF_MAX_NDIM];
        for (int j = 0; j < bpgf_param_ndim[i]; j++)
            dims[j] = (npy_intp)bpgf_param_dims[i][j];
        PyObject *view = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(BPGF_TYPENUM),
                                              bpgf_param_ndim[i], dims, NULL, data,
                                              NPY_ARRAY_CARRAY, NULL);
        if (!view) {
            Py_DECREF(dict);
            return NULL;
        }
        Py_INCREF(base);
        if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)base) < 0
            || PyDict_SetItem(dict, PyTuple_GET_ITEM(keys, i), view) < 0) {
            Py_DECREF(view);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(view);
        data += bpgf_param_size[i];
    }
    return dict;
}

/* Where one call's pieces go: the result's size, and in the thread's
   workspace the generated function's own part, then (each from a 64-byte
   line) the one-hot labels or y time-major, x time-major, and the output
   when it is not the result array itself (loss's scalar; forward's
   time-major rows, transposed into the result after). */
typedef struct {
    int64_t N;
    int with_y, labels, x_moved, y_moved, out_in_ws;
    size_t out_size, ws_size, at_y, at_x, at_out;
} bpgf_plan;

static int bpgf_plan_call(int entry, int64_t N, bpgf_plan *pl)
{
    const int64_t T = BPGF_STEPS ? BPGF_STEPS : 1;
    pl->N = N;
    pl->with_y = entry != BPGF_E_FORWARD;
    pl->labels = pl->with_y && BPGF_TARGET_LABELS;
    pl->x_moved = BPGF_STEPS != 0;
    pl->y_moved = pl->with_y && !pl->labels && BPGF_LOSS_ALL_STEPS && BPGF_STEPS;
    pl->out_in_ws = entry == BPGF_E_LOSS || (entry == BPGF_E_FORWARD && BPGF_SEQ_OUT);
    const size_t y_rows = (size_t)N * (BPGF_LOSS_ALL_STEPS ? (size_t)T : 1);
    pl->out_size = entry == BPGF_E_LOSS ? BPGF_OUT_LOSS_B
        : entry == BPGF_E_HVP ? BPGF_OUT_HVP_B : BPGF_OUT_LOSS_AND_GRAD_B;
    if (entry == BPGF_E_FORWARD) {
        pl->out_size = 0;
        if (!bpgf_madd(&pl->out_size, (size_t)N, BPGF_OUT_FORWARD_A)
            || !bpgf_madd(&pl->out_size, 1, BPGF_OUT_FORWARD_B))
            return 0;
    }
    /* the generated function's part, or its slices' (runtime/split.c) */
    pl->ws_size = bpg_entry_ws(entry, N);
    if (!pl->ws_size)
        return 0;
    pl->at_y = pl->ws_size;
    if ((pl->labels || pl->y_moved)
        && (!bpgf_madd(&pl->ws_size, y_rows, BPGF_K) || !bpgf_round(&pl->ws_size)))
        return 0;
    pl->at_x = pl->ws_size;
    if (pl->x_moved     /* N * BPGF_IN_SIZE: the elements of x, which exists */
        && (!bpgf_madd(&pl->ws_size, (size_t)N, BPGF_IN_SIZE * BPGF_X_REALS)
            || !bpgf_round(&pl->ws_size)))
        return 0;
    pl->at_out = pl->ws_size;
    if (pl->out_in_ws && !bpgf_madd(&pl->ws_size, 1, pl->out_size))
        return 0;
    return pl->ws_size > 0;
}

/* The parameters: every lookup first (a key's __eq__ may run Python code),
   each array held (a new reference in held[0 .. *taken-1]), then the
   checks, after which no Python code runs. */
static int bpgf_take_params(PyObject *keys, PyObject *params, PyObject **held, int *taken,
                            const real **p)
{
    if (!PyDict_CheckExact(params) || PyDict_GET_SIZE(params) != BPGF_NPARAM_ARRAYS)
        return 0;
    for (; *taken < BPGF_NPARAM_ARRAYS; (*taken)++) {
        PyObject *arr = PyDict_GetItemWithError(params, PyTuple_GET_ITEM(keys, *taken));
        if (!arr) {
            PyErr_Clear();
            return 0;
        }
        Py_INCREF(arr);
        held[*taken] = arr;
    }
    for (int i = 0; i < BPGF_NPARAM_ARRAYS; i++) {
        if (!bpgf_real_array(held[i], bpgf_param_ndim[i], 0, bpgf_param_dims[i]))
            return 0;
        p[i] = (const real *)PyArray_DATA((PyArrayObject *)held[i]);
    }
    return 1;
}

/* a float target's array: (N, K), or (N, T, K) when the loss reads every step */
static int bpgf_target_array(PyObject *yo, int64_t N)
{
    const int64_t dims[2] = {BPGF_STEPS, BPGF_K};
    int ok = BPGF_LOSS_ALL_STEPS ? bpgf_real_array(yo, 3, 1, dims)
                                 : bpgf_real_array(yo, 2, 1, dims + 1);
    return ok && PyArray_DIMS((PyArrayObject *)yo)[0] == N;
}

/* x and y as the generated code reads them (x, labels and targets checked
   for their values on the way); the arrays' shapes are checked already */
static int bpgf_inputs(const bpgf_plan *pl, PyObject *xo, PyObject *yo, real *ws,
                       const bpgf_x_t **xp, const real **yp)
{
    const int64_t N = pl->N, T = BPGF_STEPS ? BPGF_STEPS : 1;
    *xp = (const bpgf_x_t *)PyArray_DATA((PyArrayObject *)xo);
    if (pl->x_moved) {
        bpgf_x_t *moved = (bpgf_x_t *)(ws + pl->at_x);
        bpgf_x_time_major(*xp, N, T, BPGF_IN_SIZE / T, moved);
        *xp = moved;
    }
    if (!bpgf_x_valid(*xp, (size_t)N * BPGF_IN_SIZE))
        return 0;
    *yp = NULL;
    if (pl->labels) {
        *yp = ws + pl->at_y;
        return bpgf_labels(yo, N, BPGF_LOSS_ALL_STEPS ? T : 1, ws + pl->at_y);
    }
    if (!pl->with_y)
        return 1;
    const real *y = (const real *)PyArray_DATA((PyArrayObject *)yo);
    const size_t size = (size_t)N * (BPGF_LOSS_ALL_STEPS ? (size_t)T : 1) * BPGF_K;
    if (!bpgf_targets_ok(y, size))
        return 0;
    *yp = y;
    if (pl->y_moved) {
        bpgf_time_major(y, N, T, BPGF_K, ws + pl->at_y);
        *yp = ws + pl->at_y;
    }
    return 1;
}

/* the array the result is (forward), or holds (loss_and_grad: the loss then
   the flat gradient; hvp: the flat H·v); none for loss */
static PyArrayObject *bpgf_result_array(int entry, const bpgf_plan *pl)
{
    npy_intp dims[3] = {(npy_intp)pl->N, BPGF_K, 0};
    int nd = 2;
    if (entry == BPGF_E_LOSS)
        return NULL;
    if (entry == BPGF_E_LOSS_AND_GRAD || entry == BPGF_E_HVP) {
        dims[0] = (npy_intp)pl->out_size;
        nd = 1;
    } else if (BPGF_SEQ_OUT) {
        dims[1] = BPGF_STEPS;
        dims[2] = BPGF_K;
        nd = 3;
    }
    return (PyArrayObject *)PyArray_SimpleNew(nd, dims, BPGF_TYPENUM);
}

/* What the entry point returns, from the finite output `out`; NULL with an
   exception set.  Runs after the last use of the workspace: the objects made
   here may start a garbage collection, and with it Python code. */
static PyObject *bpgf_return(int entry, const bpgf_plan *pl, PyArrayObject *result,
                             const real *out, PyObject *keys)
{
    if (entry == BPGF_E_LOSS)
        return PyFloat_FromDouble((double)out[0]);
    if (entry == BPGF_E_FORWARD) {
        Py_INCREF(result);
        return (PyObject *)result;
    }
    if (entry == BPGF_E_HVP)
        return bpgf_grads_dict(keys, result, 0);
    PyObject *grads = bpgf_grads_dict(keys, result, 1);
    PyObject *value = grads ? PyFloat_FromDouble((double)out[0]) : NULL;
    PyObject *pair = value ? PyTuple_New(2) : NULL;
    if (!pair) {
        Py_XDECREF(value);
        Py_XDECREF(grads);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, value);
    PyTuple_SET_ITEM(pair, 1, grads);
    return pair;
}

/* One call of an entry point: handled here, or by the Python path. */
static PyObject *bpgf_entry(int entry, PyObject *self, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames)
{
    bpgf_state st;
    if (!bpgf_unpack(self, &st)) {
        PyErr_SetString(PyExc_SystemError, "bpgen entry point: bad state");
        return NULL;
    }
    const Py_ssize_t nargs = entry == BPGF_E_FORWARD ? 2 : entry == BPGF_E_HVP ? 4 : 3;
    if (kwnames || PyVectorcall_NARGS(nargsf) != nargs
        || !bpgf_typed_array(args[1], BPGF_X_TYPENUM, 1 + BPGF_IN_NDIM, 1, bpgf_in_dims))
        return bpgf_fallback(entry, &st, args, nargsf, kwnames);
    PyObject *xo = args[1], *yo = nargs >= 3 ? args[2] : NULL;
    const int64_t N = (int64_t)PyArray_DIMS((PyArrayObject *)xo)[0];
    bpgf_plan pl;
    if (N < 1 || !bpgf_batch_fits(st.globals, N) || !bpgf_plan_call(entry, N, &pl))
        return bpgf_fallback(entry, &st, args, nargsf, kwnames);

    PyObject *held[BPGF_NPARAM_ARRAYS], *held_v[BPGF_NPARAM_ARRAYS];
    const real *p[BPGF_NPARAM_ARRAYS] = {0}, *v[BPGF_NPARAM_ARRAYS] = {0};
    int taken = 0, taken_v = 0;
    int ok = bpgf_take_params(st.keys, args[0], held, &taken, p)
        && (entry != BPGF_E_HVP || bpgf_take_params(st.keys, args[3], held_v, &taken_v, v))
        && (!pl.with_y || pl.labels || bpgf_target_array(yo, N));
    /* the result's array before the workspace is taken (see bpgf_return) */
    PyArrayObject *result = ok ? bpgf_result_array(entry, &pl) : NULL;
    if (ok && entry != BPGF_E_LOSS && !result) {
        PyErr_Clear();
        ok = 0;
    }
    real *ws = ok ? bpgf_workspace(pl.ws_size) : NULL;
    const bpgf_x_t *xp = NULL;
    const real *yp = NULL;
    ok = ws && bpgf_inputs(&pl, xo, yo, ws, &xp, &yp);

    PyObject *ret = NULL;
    if (ok) {
        real *out = pl.out_in_ws ? ws + pl.at_out : (real *)PyArray_DATA(result);
        /* the GIL is let go for calls long enough to be worth it (the
           parameters are held; x and y are the caller's arguments) */
        const double work = (double)N * (double)BPGF_WORK_PER_SAMPLE;
        int finite = 0;
        if (work >= BPGF_GIL_WORK || bpgs_min_work < BPGF_GIL_WORK) {
            /* (its turn for the threads, split or the BLAS's, see split.c;
               a call below BPGF_GIL_WORK has no product the BLAS would
               thread, and is never split, unless the tests lower the
               threshold with bpg_split_rule) */
            Py_BEGIN_ALLOW_THREADS
            finite = bpg_entry_run(entry, N, xp, NULL, yp, p, v, out, ws, pl.at_y);
            Py_END_ALLOW_THREADS
        } else {
            bpgf_call(entry, N, xp, NULL, yp, p, v, out, ws);
        }
        /* a split call's threads checked its output already; else the
           Python path blames an input */
        ok = finite || bpgf_finite(out, pl.out_size);
        if (ok && entry == BPGF_E_FORWARD && BPGF_SEQ_OUT)  /* (T*N, K) -> (N, T, K) */
            bpgf_time_major(out, BPGF_STEPS, N, BPGF_K, (real *)PyArray_DATA(result));
        if (ok)
            ret = bpgf_return(entry, &pl, result, out, st.keys);
    }
    Py_XDECREF(result);
    for (int i = 0; i < taken; i++)
        Py_DECREF(held[i]);
    for (int i = 0; i < taken_v; i++)
        Py_DECREF(held_v[i]);
    if (!ok)
        return bpgf_fallback(entry, &st, args, nargsf, kwnames);
    bpgf_counts[entry][0]++;
    return ret;         /* NULL: an exception (MemoryError) is set */
}

static PyObject *bpgf_forward(PyObject *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    return bpgf_entry(BPGF_E_FORWARD, self, args, nargsf, kwnames);
}

static PyObject *bpgf_loss(PyObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames)
{
    return bpgf_entry(BPGF_E_LOSS, self, args, nargsf, kwnames);
}

static PyObject *bpgf_loss_and_grad(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    return bpgf_entry(BPGF_E_LOSS_AND_GRAD, self, args, nargsf, kwnames);
}

static PyObject *bpgf_hvp(PyObject *self, PyObject *const *args, size_t nargsf,
                          PyObject *kwnames)
{
    return bpgf_entry(BPGF_E_HVP, self, args, nargsf, kwnames);
}

static PyMethodDef bpgf_methods[BPGF_ENTRIES] = {
    {"forward", (PyCFunction)(void (*)(void))bpgf_forward, METH_FASTCALL | METH_KEYWORDS,
     "forward(params, x): the C entry point; see the module's forward."},
    {"loss", (PyCFunction)(void (*)(void))bpgf_loss, METH_FASTCALL | METH_KEYWORDS,
     "loss(params, x, y): the C entry point; see the module's loss."},
    {"loss_and_grad", (PyCFunction)(void (*)(void))bpgf_loss_and_grad,
     METH_FASTCALL | METH_KEYWORDS,
     "loss_and_grad(params, x, y): the C entry point; see the module's loss_and_grad."},
    {"hvp", (PyCFunction)(void (*)(void))bpgf_hvp, METH_FASTCALL | METH_KEYWORDS,
     "hvp(params, x, y, v): the C entry point; see the module's hvp."},
};

/* PARAM_SHAPES[key] is the compiled shape of parameter i */
static int bpgf_shape_matches(PyObject *shape, int i)
{
    if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != bpgf_param_ndim[i])
        return 0;
    for (int j = 0; j < bpgf_param_ndim[i]; j++) {
        PyObject *d = PyTuple_GET_ITEM(shape, j);
        if (!PyLong_Check(d) || PyLong_AsLongLong(d) != bpgf_param_dims[i][j])
            return 0;
    }
    return 1;
}

/* Set globals["_c_" + name] for every entry point compiled here, each
   falling back to globals["_python_" + name]; 1 when done, 0 when not
   (e.g. the NumPy C API cannot be loaded): the module keeps its Python
   path.  The parameter keys come from PARAM_SHAPES, checked against the
   compiled shapes, so no key name is compiled in. */
static int bpgf_install_locked(PyObject *globals)
{
#ifdef Py_GIL_DISABLED
    /* the checks and counters here rely on the GIL: free-threaded CPython
       keeps the Python path */
    return 0;
#endif
    if (!PyDict_Check(globals))
        return 0;
    if (PyArray_API == NULL && _import_array() < 0)
        return 0;
    pthread_once(&bpgf_ws_once, bpgf_ws_make_key);
    if (!bpgf_ws_key_ok)
        return 0;
    if (!bpgf_max_bytes_name) {
        bpgf_max_bytes_name = PyUnicode_InternFromString("MAX_RESULT_BYTES");
        if (!bpgf_max_bytes_name)
            return 0;
    }
    PyObject *shapes = PyDict_GetItemString(globals, "PARAM_SHAPES");
    PyObject *modname = PyDict_GetItemString(globals, "__name__");
    if (!shapes || !PyDict_Check(shapes) || PyDict_Size(shapes) != BPGF_NPARAM_ARRAYS
        || !modname)
        return 0;
    PyObject *keylist = PySequence_List(shapes);      /* in PARAM_SHAPES order */
    PyObject *keys = keylist ? PyTuple_New(BPGF_NPARAM_ARRAYS) : NULL;
    int ok = keys != NULL && PyList_GET_SIZE(keylist) == BPGF_NPARAM_ARRAYS;
    for (int i = 0; ok && i < BPGF_NPARAM_ARRAYS; i++) {
        PyObject *key = PyList_GET_ITEM(keylist, i);
        PyObject *shape = PyUnicode_CheckExact(key) ? PyDict_GetItem(shapes, key) : NULL;
        ok = shape && bpgf_shape_matches(shape, i);
        if (ok) {
            Py_INCREF(key);
            PyUnicode_InternInPlace(&key);
            PyTuple_SET_ITEM(keys, i, key);
        }
    }
    for (int e = 0; ok && e < BPGF_ENTRIES; e++) {
        if (!bpgf_enabled[e])
            continue;
        char name[64];
        snprintf(name, sizeof name, "_python_%s", bpgf_names[e]);
        PyObject *fallback = PyDict_GetItemString(globals, name);
        PyObject *state = fallback ? PyTuple_Pack(3, fallback, globals, keys) : NULL;
        PyObject *func = state ? PyCFunction_NewEx(&bpgf_methods[e], state, modname) : NULL;
        snprintf(name, sizeof name, "_c_%s", bpgf_names[e]);
        ok = func && PyDict_SetItemString(globals, name, func) == 0;
        Py_XDECREF(func);
        Py_XDECREF(state);
    }
    Py_XDECREF(keys);
    Py_XDECREF(keylist);
    return ok;
}

/* Called once by the wrapper at import, through cffi (which has let the
   GIL go): `globals` is the wrapper module's dict, as id(globals()). */
int bpgf_install(void *globals)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int ok = bpgf_install_locked((PyObject *)globals);
    if (!ok)
        PyErr_Clear();
    PyGILState_Release(gil);
    return ok;
}
