"""The generated module's public API, shared by both backends: argument
checking, flatten/unflatten, and every public function.  Copied verbatim
into each generated module after its constants; the backend supplies
``_run`` / ``_run_flat`` (call a generated function) and the structured
Hessian comes from ``hessian.py``.

(Longer than the ~500 lines a file here usually has: it is one unit copied
verbatim into every module: the public functions, the argument checks they
share (x's, y's, the parameters' and a padded sequence's lengths) and the
progress of long calls.)"""
import collections.abc
import json
import math
import os
import tempfile
import time
import zipfile

import numpy

from ._stub import (DTYPE, INPUT_SHAPE, LOSS, LOSS_ALL_STEPS, N_PARAMS,  # noqa: F401
                    OUTPUT_UNITS, PARAM_SHAPES, SEQUENCE_OUTPUT, STEPS, TARGET_KIND,
                    TARGET_RANGE, _TRUNCATE, _ASSEMBLY_PER_SAMPLE, _BYTES_PER_SAMPLE, _CURV_LAYERS,
                    _FACTORS, _INIT, _L2, _L2_KEYS, _MAX_STEPS, _X_BOUND, _X_DTYPE, _hessian_columns,
                    _hessian_times, _run, _run_flat, _structured_diag)
from ._stub import ARCHITECTURE, ARCHITECTURE_HASH  # noqa: F401  (save_params, load_params)

# ---- bpgen runtime: copied verbatim from here ----


def init_params(seed=0):
    """Fresh parameters (a dict): Glorot-uniform weights, zero biases, unit gains."""
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    rng = numpy.random.default_rng(seed)
    params = {}
    for key, shape in PARAM_SHAPES.items():
        kind, fan_in, fan_out = _INIT[key]     # from the parameter's role
        if kind == "glorot":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            params[key] = rng.uniform(-limit, limit, size=shape).astype(DTYPE)
        elif kind == "ones":
            params[key] = numpy.ones(shape, dtype=DTYPE)
        else:
            params[key] = numpy.zeros(shape, dtype=DTYPE)
    return params


def _as_array(value, what):
    """``value`` as a C-contiguous DTYPE array (a copy only when needed)."""
    try:
        arr = numpy.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what}: expected an array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    # a list or a Python scalar has no dtype of its own: take its values
    if hasattr(value, "dtype") and not numpy.can_cast(arr.dtype, DTYPE, "safe"):
        raise ValueError(f"{what}: dtype {arr.dtype} cannot be cast safely to "
                         f"{DTYPE} (convert it explicitly)")
    # C-contiguous and aligned: the C code reads it as a plain real*
    return numpy.require(arr, DTYPE, ["C_CONTIGUOUS", "ALIGNED"])


def _at(value, t):
    """A constant that depends on T with steps: any (a tuple of
    coefficients (c0, c1, ...) meaning c0 + c1*T + c2*T*T ...) at T = t; an
    int is the same for every T."""
    return value if isinstance(value, int) else sum(c * t ** k for k, c in enumerate(value))


def _check_batch(n, t=None):
    """Refuse a batch whose input copy, outputs and workspace cannot fit in
    memory (MAX_RESULT_BYTES), before allocating any of them (``t``: the
    steps of a steps: any sequence)."""
    need = n * _at(_BYTES_PER_SAMPLE, t)
    if need > MAX_RESULT_BYTES:
        raise ValueError(f"x: a batch of {n:,} samples needs about {need:,} bytes (input, "
                         f"outputs and workspace), more than the limit of "
                         f"{MAX_RESULT_BYTES:,} bytes (MAX_RESULT_BYTES, or set "
                         f"$BPGEN_MAX_BYTES)")


def _check_keys(params, what):
    for key in params:
        if key not in PARAM_SHAPES:
            raise ValueError(f"{what}: unknown key {key!r} (expected: "
                             f"{', '.join(PARAM_SHAPES)})")


def _check_params(params, what="params"):
    """The parameters as a list of DTYPE arrays in PARAM_SHAPES order."""
    if not isinstance(params, collections.abc.Mapping):
        raise ValueError(f"{what}: expected a dict of arrays keyed like PARAM_SHAPES, "
                         f"got {type(params).__name__}")
    if len(params) != len(PARAM_SHAPES):
        _check_keys(params, what)
    out = []
    for key, shape in PARAM_SHAPES.items():
        try:
            arr = params[key]
        except KeyError:
            _check_keys(params, what)
            raise ValueError(f"{what}: missing key {key!r}") from None
        # fast path: already a contiguous array of the right dtype and shape
        if not (type(arr) is numpy.ndarray and arr.dtype == DTYPE and arr.flags.c_contiguous
                and arr.flags.aligned and arr.shape == shape):
            arr = _as_array(arr, f"{what}[{key!r}]")
            if arr.shape != shape:
                raise ValueError(f"{what}[{key!r}]: expected shape {shape}, got {arr.shape}")
        out.append(arr)
    return out


def _check_x(x):
    """x as the matrix the generated code reads, and the batch size N.  What x
    holds is the input kind's (constants _X_DTYPE, _X_BOUND, STEPS): real
    values (converted to DTYPE, finite), or integers in [0, _X_BOUND)
    (converted to _X_DTYPE, floats refused); a sequence goes time-major.
    With STEPS "any" (INPUT_SHAPE's None) T is x's second axis, at least 1
    and at most _MAX_STEPS when that is not None."""
    checked = isinstance(x, numpy.ndarray) and x.ndim == 1 + len(INPUT_SHAPE)
    if checked:
        _check_steps(x.shape)
        # before any copy of a huge (e.g. broadcast) x
        _check_batch(x.shape[0], x.shape[1] if STEPS == "any" else None)
    if _X_DTYPE is not None:
        arr = _as_integers(x, "x")
    elif (type(x) is numpy.ndarray and x.dtype == DTYPE and x.flags.c_contiguous
          and x.flags.aligned):
        arr = x
    else:
        arr = _as_array(x, "x")
    if arr.ndim != 1 + len(INPUT_SHAPE) or (arr.shape[1:] != INPUT_SHAPE and any(
            d is not None and d != s for d, s in zip(INPUT_SHAPE, arr.shape[1:]))):
        raise ValueError(f"x: expected shape (N, "
                         f"{', '.join('T' if d is None else str(d) for d in INPUT_SHAPE)}), "
                         f"got {arr.shape}")
    n = arr.shape[0]
    if n < 1:
        raise ValueError("x: the batch is empty (N = 0)")
    if not checked:                   # a list, say: checked once converted
        _check_steps(arr.shape)
        _check_batch(n, arr.shape[1] if STEPS == "any" else None)
    if _X_DTYPE is not None:
        arr = _in_range(arr, _X_BOUND, "x")
    elif not _finite_fast(arr):
        raise ValueError("x: contains NaN or inf")
    if STEPS is not None:     # (N, T, ...) -> time-major (T*N, ...)
        return numpy.ascontiguousarray(arr.swapaxes(0, 1)).reshape(arr.shape[1] * n, -1), n
    return arr.reshape(n, -1), n


def _check_steps(shape):
    """With steps: any, x's T (its second axis) in [1, _MAX_STEPS]."""
    if STEPS != "any" or len(shape) != 1 + len(INPUT_SHAPE):
        return
    t = shape[1]
    if t < 1:
        raise ValueError(f"x: the sequences are empty (T = 0), got shape {shape}")
    if _MAX_STEPS is not None and t > _MAX_STEPS:
        raise ValueError(f"x: T = {t} steps, more than max_steps = {_MAX_STEPS} (the rows "
                         f"of the position table), got shape {shape}")


def _steps(xm, n):
    """T of the time-major x matrix ``xm`` of n samples (None: not a sequence)."""
    return None if STEPS is None else xm.shape[0] // n


def _masks(lengths, n, t=STEPS):
    """The per-(sample, step) masks a sequence network's generated functions
    read after x, time-major (T*N, 1) like x's rows: 1 at the steps before a
    sample's length, 0 at its padding; with truncated BPTT also 0 where a
    reversed loop's gradient is cut for that sample (every _TRUNCATE steps
    counted from its last real step).  ``lengths`` None: every step real (the
    masks of the last N asked are kept).  A ValueError naming ``lengths``
    unless it is an (N,) integer array with values in [1, T] (``t``: T)."""
    if lengths is None:
        if STEPS is None:
            return []
        full = _FULL_MASKS.get((n, t))
        if full is None:
            full = _masks(numpy.full(n, t), n, t)
            _FULL_MASKS.clear()
            _FULL_MASKS[(n, t)] = full
        return full
    if STEPS is None:
        raise ValueError("lengths: only a network with a sequence input takes lengths")
    arr = _as_integers(lengths, "lengths")
    if arr.shape != (n,):
        raise ValueError(f"lengths: expected shape ({n},) (one length per sample), "
                         f"got {arr.shape}")
    low, high = arr.min(), arr.max()
    if low < 1 or high > t:
        raise ValueError(f"lengths: values must lie in [1, {t}] (T = {t}), got values in "
                         f"[{low}, {high}]")
    steps = numpy.arange(t)[:, None]
    last = arr.astype(numpy.int64)[None, :] - 1          # each sample's last real step
    masks = [numpy.ascontiguousarray((steps <= last).astype(DTYPE).reshape(-1, 1))]
    if _TRUNCATE:
        cut = (steps <= last) & ((last - steps) % _TRUNCATE == 0)
        masks.append(numpy.ascontiguousarray((~cut).astype(DTYPE).reshape(-1, 1)))
    return masks


_FULL_MASKS = {}      # (N, T) -> the masks of a call without lengths (_masks)


def _xs(xm, n, lengths):
    """The generated functions' inputs before y: x, then a sequence's masks
    (with steps: any, x, T, then the masks)."""
    if STEPS == "any":
        t = _steps(xm, n)
        return [xm, t, *_masks(lengths, n, t)]
    return [xm, *_masks(lengths, n)]


def _as_integers(value, what):
    """``value`` as an integer array (not yet converted): any integer dtype;
    floats, booleans and everything else are refused."""
    try:
        arr = numpy.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what}: expected an array of integers ({exc})") from None
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected integers, got dtype {arr.dtype}")
    return arr


def _in_range(arr, bound, what):
    """Integer ``arr`` as a C-contiguous _X_DTYPE array, every value in [0, bound)
    (checked before the conversion, which could wrap a large unsigned value)."""
    low, high = arr.min(), arr.max()
    if low < 0 or high >= bound:
        raise ValueError(f"{what}: values must lie in [0, {bound}), got values in "
                         f"[{low}, {high}]")
    return numpy.require(arr, _X_DTYPE, ["C_CONTIGUOUS", "ALIGNED"])


_EYE = []     # the identity rows one-hot labels are taken from, made on first use


def _check_y(y, n, xm):
    """The target as the (rows, OUTPUT_UNITS) DTYPE matrix the generated code
    reads: labels one-hot, steps time-major (TARGET_KIND and TARGET_RANGE
    are the loss's; ``xm``, the checked time-major x, says T)."""
    steps = _steps(xm, n) if LOSS_ALL_STEPS else None
    lead = (n,) if steps is None else (n, steps)
    if TARGET_KIND == "labels":
        try:
            labels = numpy.asarray(y)
        except Exception as exc:
            raise ValueError(f"y: expected integer class labels ({exc})") from None
        if labels.dtype.kind not in "iu":
            raise ValueError(f"y: expected integer class labels, got dtype {labels.dtype}")
        if labels.shape != lead:
            raise ValueError(f"y: expected shape {lead}, got {labels.shape}")
        flat = labels.ravel() if steps is None else labels.T.ravel()
        try:
            if labels.dtype.kind == "i" and labels.min() < 0:
                raise IndexError
            if not _EYE:
                _EYE.append(numpy.eye(OUTPUT_UNITS, dtype=DTYPE))
            return _EYE[0].take(flat, axis=0)      # one-hot: rows of the identity
        except IndexError:
            raise ValueError(f"y: labels must lie in [0, {OUTPUT_UNITS}), got values in "
                             f"[{labels.min()}, {labels.max()}]") from None
    arr = y if (type(y) is numpy.ndarray and y.dtype == DTYPE and y.flags.c_contiguous
                and y.flags.aligned) else _as_array(y, "y")
    if arr.shape != lead + (OUTPUT_UNITS,):
        raise ValueError(f"y: expected shape {lead + (OUTPUT_UNITS,)}, got {arr.shape}")
    if not _finite_fast(arr):
        raise ValueError("y: contains NaN or inf")
    if TARGET_RANGE is not None and not ((arr >= TARGET_RANGE[0])
                                         & (arr <= TARGET_RANGE[1])).all():
        raise ValueError(f"y: {LOSS} targets must lie in "
                         f"[{TARGET_RANGE[0]:g}, {TARGET_RANGE[1]:g}]")
    if steps is not None:
        arr = numpy.ascontiguousarray(arr.transpose(1, 0, 2)).reshape(-1, OUTPUT_UNITS)
    return arr


def flatten(params):
    """The parameters as one 1-D array: keys in PARAM_SHAPES order, C order."""
    mats = _check_params(params)
    return numpy.concatenate([m.ravel() for m in mats]) if mats else numpy.zeros(0, DTYPE)


def unflatten(vector):
    """The inverse of flatten(): a dict of fresh arrays."""
    arr = _as_array(vector, "vector")
    if arr.shape != (N_PARAMS,):
        raise ValueError(f"vector: expected shape ({N_PARAMS},), got {arr.shape}")
    return {key: arr[a:b].reshape(shape).copy() for key, a, b, shape in _SLICES}


def _slices():
    out, off = [], 0
    for key, shape in PARAM_SHAPES.items():
        size = math.prod(shape)
        out.append((key, off, off + size, shape))
        off += size
    return out


_SLICES = _slices()


def _grads_dict(flat):
    return {key: flat[a:b].reshape(shape) for key, a, b, shape in _SLICES}


def _finite_fast(arr):
    """All entries finite: one reduction (a sum that overflows although every
    entry is finite is checked again exactly)."""
    return math.isfinite(arr.sum()) or _finite(arr)


def _finite(arr):
    """All entries finite (a NaN or inf anywhere makes max or min non-finite)."""
    return arr.size == 0 or (math.isfinite(arr.max()) and math.isfinite(arr.min()))


def _all_finite(arrays):
    """Every entry of every array finite.  The small ones are checked
    together, in one pass over their concatenation: a network's many small
    parameter arrays would otherwise cost two calls each."""
    small = [a for a in arrays if a.size <= 4096]
    if small and not numpy.isfinite(numpy.concatenate(small, axis=None)).all():
        return False
    return all(_finite(a) for a in arrays if a.size > 4096)


#: results this many times larger than their inputs have the inputs checked first
_INPUTS_CHEAPER = 4


def _finite_or_blame(result, xm, ym, mats, vmats=(), extra=()):
    """``result`` when it is finite.  A result made non-finite by a NaN or
    inf in an input is refused: a ValueError naming that input.  (Only then
    are the inputs scanned, so a finite call pays two reductions; unless the
    result is much larger than the inputs, whose scan then comes first.)"""
    if result.size > _INPUTS_CHEAPER * (xm.size + sum(m.size for m in mats)):
        # a large result (a Hessian): the inputs are scanned first, as finite
        # inputs mean the result is returned whatever it holds
        if _all_finite([*mats, *vmats, *(a for _, a in extra)]):
            return result      # (x and y were checked when they came in)
    # max and min, not a sum: inf - inf would make the sum warn
    if _finite(result):
        return result
    named = [("x", xm), ("y", ym)] + [(f"params[{k!r}]", m) for k, m in zip(PARAM_SHAPES, mats)]
    named += [(f"v[{k!r}]", m) for k, m in zip(PARAM_SHAPES, vmats)] + list(extra)
    for what, arr in named:
        if arr is not None and not _finite(arr):
            raise ValueError(f"{what}: contains NaN or inf, which makes the result "
                             f"non-finite")
    return result       # finite inputs, a non-finite result: IEEE overflow, returned as is


def forward(params, x, lengths=None):
    """The network's output before the loss, shape (N, OUTPUT_UNITS).  With
    ``lengths`` (sequences), 0 at every sample's padded steps."""
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    out = _finite_or_blame(_run("forward", n, [*xs, *mats])[0], xm, None, mats)
    if lengths is not None and SEQUENCE_OUTPUT:
        out = numpy.where(xs[-1 if not _TRUNCATE else -2] > 0, out, 0).astype(DTYPE, copy=False)
    if SEQUENCE_OUTPUT:       # time-major (T*N, K) -> (N, T, K)
        return numpy.ascontiguousarray(out.reshape(-1, n, out.shape[1]).transpose(1, 0, 2))
    return numpy.ascontiguousarray(out, dtype=DTYPE)


def loss(params, x, y, lengths=None):
    """The scalar loss (a Python float).  ``lengths`` (sequences; an (N,)
    integer array, 1 <= lengths[n] <= T): steps from lengths[n] on are
    padding, the mean runs over the real (sample, step) pairs (steps: all)
    or reads each sample's last real step (steps: last); every function
    that takes x takes it, and its derivatives are this loss's."""
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    return float(_finite_or_blame(_run("loss", n, [*xs, ym, *mats])[0], xm, ym, mats)[0, 0])


def loss_and_grad(params, x, y, lengths=None):
    """(loss, gradients): a float and a dict shaped like ``params``."""
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    flat = _finite_or_blame(_run_flat("loss_and_grad", n, [*xs, ym, *mats]), xm, ym, mats)
    return float(flat[0]), _grads_dict(flat[1:])


def hvp(params, x, y, v, lengths=None):
    """The exact Hessian of the loss at ``params`` times ``v`` (a dict shaped
    like params), as such a dict: Pearlmutter's R-operator over the derived
    forward and backward pass.  With bptt truncation this is still the
    Hessian of the exact loss."""
    mats = _check_params(params)
    vmats = _check_params(v, "v")
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    flat = _run_flat("hvp", n, [*xs, ym, *mats, *vmats])
    return _grads_dict(_finite_or_blame(flat, xm, ym, mats, vmats))


class _Progress:
    """Progress of a long call: ``progress`` (a callable taking a message)
    hears "<what>: <done>/<total> <unit> (<s> s, about <s> s left)" at most
    about once a second, and once at the end.  Without a callable nothing is
    measured or said (the default: library calls are silent)."""

    def __init__(self, progress, what, total, unit):
        if progress is not None and not callable(progress):
            raise ValueError(f"progress: expected a callable taking a message, or None, "
                             f"got {type(progress).__name__}")
        self.say, self.what, self.total, self.unit = progress, what, total, unit
        self.t0 = self.last = time.perf_counter()

    def step(self, done):
        if self.say is None:
            return
        now = time.perf_counter()
        if done >= self.total:
            self.say(f"{self.what}: {self.total}/{self.total} {self.unit} "
                     f"in {now - self.t0:.1f} s")
        elif now - self.last >= 1.0 and done:
            left = (now - self.t0) * (self.total - done) / done
            self.say(f"{self.what}: {done}/{self.total} {self.unit} ({now - self.t0:.1f} s, "
                     f"about {left:.0f} s left)")
            self.last = now


#: with a progress callable, calls over many directions go in about this many
#: slices (each repeats the shared forward and backward pass, a small part of
#: a slice's tangent passes)
_PROGRESS_SLICES = 20


def _sliced(fn, count, bar):
    """fn(j0, k) -> rows j0 .. j0+k-1 of a (count, N_PARAMS) array (or None:
    no such pass): one call without a progress callable, else slices of
    about count/20 rows (at least 64), each reported."""
    size = count if bar.say is None else max(_ROW_CHUNK, -(-count // _PROGRESS_SLICES))
    if size >= count:
        rows = fn(0, count)
        if rows is not None:
            bar.step(count)
        return rows
    out = None
    for j0 in range(0, count, size):
        k = min(size, count - j0)
        rows = fn(j0, k)
        if rows is None:
            return None
        if out is None:
            out = numpy.empty((count, rows.shape[1]), dtype=rows.dtype)
        out[j0:j0 + k] = rows
        bar.step(j0 + k)
    return out


def hessian(params, x, y, lengths=None, *, progress=None):
    """The exact Hessian, an (N_PARAMS, N_PARAMS) array in the flat order:
    H[i, j] = d^2 loss / d theta_i d theta_j with theta = flatten(params).

    For networks of dense layers it is assembled from its matrix-form
    structure by generated code (Kronecker blocks per layer pair plus the
    commutation-type delta terms; ``bpgen show --hessian`` prints the
    derived assembly); otherwise from Hessian columns: one forward and
    backward pass, then the tangent pass over chunks of directions at once
    (one hvp per column where a layer has no rule for that: conv2d, pooling
    in the NumPy backend).

    ``progress``: a callable taking a message, told how many columns are
    done about once a second (the call is then cut into about 20 slices)."""
    _check_fits("hessian", N_PARAMS * N_PARAMS)
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    if _CURV_LAYERS:        # the generated assembly (see bpgen show --hessian)
        _check_fits("hessian", N_PARAMS * N_PARAMS + _ASSEMBLY_PER_SAMPLE["hessian"] * n)
        bar = _Progress(progress, "hessian (assembled)", 1, "call")
        out = _run("hessian", n, [*xs, ym, *mats])[0]
        bar.step(1)
        return _finite_or_blame(out, xm, ym, mats)
    bar = _Progress(progress, "hessian", N_PARAMS, "columns")
    args = [*xs, ym, *mats]
    out = _sliced(lambda j0, k: _hessian_columns(n, args, j0, k), N_PARAMS, bar)
    # the exact Hessian is symmetric; average away the rounding
    return _finite_or_blame(_symmetrise(out), xm, ym, mats)


def _symmetrise(h, block=128):
    """(h + hᵀ)/2 in place (h square and C-contiguous), a block of rows
    and its mirror column block at a time: no temporary of h's size (the
    whole-matrix expression's two cost about 10% of the transformer
    Hessian benchmark's call, docs/performance.md)."""
    n = h.shape[0]
    for i in range(0, n, block):
        j = min(i + block, n)
        avg = h[i:j, i:] + h[i:, i:j].T      # rows i..j-1 from column i on
        avg *= 0.5
        h[i:j, i:] = avg
        h[j:, i:j] = avg[:, j - i:].T
    return h


def _hvp_rows(n, args, first, count):
    """Rows first .. first+count-1 of the Hessian from one hvp each."""
    out = numpy.empty((count, N_PARAMS), dtype=DTYPE)
    basis = numpy.zeros(N_PARAMS, dtype=DTYPE)
    for j in range(first, first + count):
        basis[j] = 1
        vmats = [basis[a:b].reshape(shape) for _, a, b, shape in _SLICES]
        out[j - first] = _run_flat("hvp", n, [*args, *vmats])
        basis[j] = 0
    return out


#: rows of the Hessian formed at once where only some of each are kept
_ROW_CHUNK = 64


def hmp(params, x, y, V, lengths=None, *, progress=None):
    """The exact Hessian times the matrix ``V`` (N_PARAMS, k), an
    (N_PARAMS, k) array: one forward and backward pass shared by all k
    columns, then the tangent pass over chunks of columns at once (the
    directions as extra columns of its products; at most HESSIAN_CHUNK
    columns and about HESSIAN_CHUNK_BYTES of tangents per chunk).  NumPy
    modules of networks with conv2d or pooling take one hvp per column.
    ``progress``: as for :func:`hessian`, in columns of V."""
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    vm = _as_array(V, "V")
    if vm.ndim != 2 or vm.shape[0] != N_PARAMS:
        raise ValueError(f"V: expected shape ({N_PARAMS}, k), got {vm.shape}")
    _check_fits("hmp", N_PARAMS * vm.shape[1])
    bar = _Progress(progress, "hmp", vm.shape[1], "columns")
    args = [*xs, ym, *mats]
    vt = vm.T
    rows = (_sliced(lambda j0, k: _hessian_times(n, args, vt[j0:j0 + k]), vm.shape[1], bar)
            if vm.shape[1] else None)
    if rows is not None:
        out = numpy.ascontiguousarray(rows.T)
    else:
        out = numpy.empty(vm.shape, dtype=DTYPE)
        for j in range(vm.shape[1]):
            col = numpy.ascontiguousarray(vm[:, j])
            vmats = [col[a:b].reshape(shape) for _, a, b, shape in _SLICES]
            out[:, j] = _run_flat("hvp", n, [*xs, ym, *mats, *vmats])
            bar.step(j + 1)
    return _finite_or_blame(out, xm, ym, mats, extra=[("V", vm)])


def _memory_limit():
    """Half of the machine's memory, or $BPGEN_MAX_BYTES."""
    text = os.environ.get("BPGEN_MAX_BYTES", "").strip()
    if text:
        try:
            return int(float(text))
        except ValueError:
            raise ValueError(f"BPGEN_MAX_BYTES: expected a number of bytes, "
                             f"got {text!r}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


#: the largest result hessian(), hmp() or hessian_blocks() builds, in bytes
#: (half of the machine's memory unless $BPGEN_MAX_BYTES says; assignable)
MAX_RESULT_BYTES = _memory_limit()


def _check_fits(what, entries):
    """Refuse a result that cannot fit in memory before allocating it."""
    need = entries * DTYPE.itemsize
    if need > MAX_RESULT_BYTES:
        raise ValueError(f"{what}: the result needs {need:,} bytes "
                         f"(N_PARAMS = {N_PARAMS:,}), more than the limit of "
                         f"{MAX_RESULT_BYTES:,} bytes (MAX_RESULT_BYTES, or set "
                         f"$BPGEN_MAX_BYTES)")


def _curvature_outputs(xm, n, ym, mats):
    return [numpy.asarray(o, dtype=numpy.float64)
            for o in _run("curvature", n, [xm, ym, *mats])]


def ggn_vp(params, x, y, v, lengths=None):
    """The generalised Gauss-Newton matrix times ``v``: Jᵀ H_L J v with J the
    Jacobian of the network output and H_L the Hessian of the loss w.r.t.
    the output (plus l2 * v on regularised weights).  Positive semi-definite
    for the three (convex) losses."""
    mats = _check_params(params)
    vmats = _check_params(v, "v")
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    flat = _run_flat("ggn_vp", n, [*xs, ym, *mats, *vmats])
    return _grads_dict(_finite_or_blame(flat, xm, ym, mats, vmats))


def grad_factors(params, x, y, lengths=None):
    """For every weight matrix (W, Wx, Wh, conv kernels: the weight roles),
    factors (U, V) with dW = Uᵀ V (a conv kernel as its (filters, C·k·k)
    matrix: U its delta per output pixel, V the patches).

    U is the layer's input and V its delta, one row per sample (per sample
    and step for recurrent weights, time-major), so the data part of the
    gradient has rank at most N (N*T).  With l2 the regulariser's term
    l2*W is included as extra rows: U gains the identity, V gains l2*W.
    The gradient is the one loss_and_grad returns (truncated if bptt says so).
    """
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    outs = _run("grad_factors", n, [*xs, _check_y(y, n, xm), *mats])
    res = {}
    for key, entry in _FACTORS.items():
        if len(entry) == 3:                     # a table: onehot(index)ᵀ·δ
            res[key] = (_onehot_rows(entry[0], entry[2], outs, xm, n), outs[entry[1]])
            continue
        u, v = outs[entry[0]], outs[entry[1]]
        if _L2 and key in _L2_KEYS:
            w = mats[list(PARAM_SHAPES).index(key)]
            w = w.reshape(w.shape[0], -1)      # a conv kernel as its (filters, C·k·k) matrix
            u = numpy.concatenate([u, numpy.eye(w.shape[0], dtype=DTYPE)])
            v = numpy.concatenate([v, _L2 * w])
        res[key] = (numpy.ascontiguousarray(u), numpy.ascontiguousarray(v))
    return res


def _onehot_rows(ids, size, outs, xm, n):
    """U of a table's gradient onehot(index)ᵀ·δ: a (rows, size) matrix, one
    1 per row at its index (``ids``: -1 x's token ids, -2 the row's step
    (row t·N + n: t), else an output holding the ids)."""
    if ids == -2:
        index = numpy.repeat(numpy.arange(xm.shape[0] // n), n)
    else:
        index = (xm if ids == -1 else outs[ids]).reshape(-1).astype(numpy.int64)
    u = numpy.zeros((index.size, size), dtype=DTYPE)
    u[numpy.arange(index.size), index] = 1
    return u


def hessian_diag(params, x, y, lengths=None, *, progress=None):
    """The exact diagonal of the Hessian, as a dict shaped like params.

    For networks of dense layers it comes from square-root factors of each
    layer's curvature (no Hessian block is formed: memory grows like
    N x layer width x factor columns); otherwise from one Hessian-vector
    product per parameter, keeping only its diagonal entry (memory O(N_PARAMS)).
    ``progress``: as for :func:`hessian`, in parameters."""
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    if _CURV_LAYERS:
        bar = _Progress(progress, "hessian_diag (structured)", 1, "call")
        diag = _structured_diag(mats, _curvature_outputs(xm, n, ym, mats), n)
        bar.step(1)
        return _grads_dict(_finite_or_blame(diag, xm, ym, mats))
    bar = _Progress(progress, "hessian_diag", N_PARAMS, "parameters")
    out = numpy.empty(N_PARAMS, dtype=DTYPE)
    for first in range(0, N_PARAMS, _ROW_CHUNK):
        count = min(_ROW_CHUNK, N_PARAMS - first)
        rows = _hessian_columns(n, [*xs, ym, *mats], first, count)
        out[first:first + count] = rows[numpy.arange(count), first + numpy.arange(count)]
        bar.step(first + count)
    return _grads_dict(_finite_or_blame(out, xm, ym, mats))


def hessian_blocks(params, x, y, lengths=None, *, progress=None):
    """The per-layer diagonal blocks of the exact Hessian: {layer name:
    (keys, block)} with block indexed like the flat order restricted to the
    layer's parameters ``keys``.  Memory: the blocks, not N_PARAMS² (for
    networks of dense layers the generated assembly forms them all at once;
    otherwise each is formed on its own from rows of the Hessian).
    ``progress``: as for :func:`hessian`, in rows of the blocks."""
    layers = {}
    for key, a, b, _ in _SLICES:
        name = key.split(".", 1)[0]
        keys, lo, hi = layers.get(name, ([], a, b))
        layers[name] = (keys + [key], min(lo, a), max(hi, b))
    largest = max((hi - lo for _, lo, hi in layers.values()), default=0)
    _check_fits("hessian_blocks", largest * largest)
    mats = _check_params(params)
    xm, n = _check_x(x)
    xs = _xs(xm, n, lengths)
    ym = _check_y(y, n, xm)
    structured = {}
    bar = _Progress(progress, "hessian_blocks", 1 if _CURV_LAYERS else
                    sum(hi - lo for _, lo, hi in layers.values()), "rows")
    done = 0
    if _CURV_LAYERS:        # the generated assembly: every block at once
        _check_fits("hessian_blocks", sum((hi - lo) ** 2 for _, lo, hi in layers.values())
                    + _ASSEMBLY_PER_SAMPLE["hessian_blocks"] * n)
        blocks = _run("hessian_blocks", n, [*xs, ym, *mats])
        structured = {wk.split(".", 1)[0]: b for (wk, *_), b in zip(_CURV_LAYERS, blocks)}
        bar.step(1)
    result = {}
    for name, (keys, lo, hi) in layers.items():
        if structured:
            block = structured[name]
        else:
            block = numpy.empty((hi - lo, hi - lo), dtype=DTYPE)
            for first in range(lo, hi, _ROW_CHUNK):
                count = min(_ROW_CHUNK, hi - first)
                block[first - lo:first - lo + count] = _hessian_columns(
                    n, [*xs, ym, *mats], first, count)[:, lo:hi]
                done += count
                bar.step(done)
            block = (block + block.T) / 2
        result[name] = (keys, numpy.ascontiguousarray(block))
    return result


# ---- parameters on disk ------------------------------------------------

#: the prefix of save_params()'s own entries in the .npz (":" is in no
#: parameter key: keys are dotted identifiers)
_META = "bpgen:"


def _path(path):
    """``path`` as a file-system path (str or os.PathLike), else a ValueError."""
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    raise ValueError(f"path: expected a file name (str or os.PathLike), got "
                     f"{type(path).__name__}")


def save_params(path, params):
    """Write ``params`` to the .npz file ``path`` (exactly that name; replaced
    whole, never left half-written), with the architecture's hash, dtype and
    description: load_params() of a module of another architecture refuses it."""
    path = _path(path)
    mats = _check_params(params)
    arrays = dict(zip(PARAM_SHAPES, mats))
    arrays.update({_META + "architecture_hash": numpy.array(ARCHITECTURE_HASH),
                   _META + "dtype": numpy.array(DTYPE.name),
                   _META + "architecture": numpy.array(json.dumps(_unnamed(), sort_keys=True)),
                   _META + "format": numpy.array(1)})
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bpgen-params-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            numpy.savez(fh, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _unnamed():
    """ARCHITECTURE without its name: what ARCHITECTURE_HASH is the hash of."""
    arch = json.loads(ARCHITECTURE)
    arch.pop("name", None)
    return arch


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _architecture_differences(theirs, ours, where=""):
    """The fields in which two architecture descriptions differ, as text."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out = []
        for key in sorted(set(theirs) | set(ours)):
            sub = f"{where}.{key}" if where else key
            if key not in theirs or key not in ours:
                out.append(f"{sub}: only in {'this module' if key in ours else 'the file'}")
            else:
                out += _architecture_differences(theirs[key], ours[key], sub)
        return out
    if isinstance(theirs, list) and isinstance(ours, list) and len(theirs) == len(ours):
        out = []
        for i, (a, b) in enumerate(zip(theirs, ours)):
            out += _architecture_differences(a, b, f"{where}[{i}]")
        return out
    if theirs != ours:
        return [f"{where}: {json.dumps(theirs)} in the file, {json.dumps(ours)} here"]
    return []


def load_params(path):
    """The parameters save_params() wrote to ``path``: a dict of C-contiguous
    DTYPE arrays in PARAM_SHAPES order.  A file of another architecture
    (another hash) is a ValueError naming what differs: keys, shapes, the
    dtype and the other fields of the architecture."""
    path = _path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path: {path} is a directory, not an .npz file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no such file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"path: {path} is not an .npz file (a zip archive of .npy arrays, "
                         f"as save_params writes)")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"path: cannot read {path} as an .npz file: {first}") from None
    odd = [key for key, value in arrays.items() if not isinstance(value, numpy.ndarray)]
    if odd:
        raise ValueError(f"path: {path} is not an .npz file of arrays ({odd[0]!r} is no "
                         f".npy array)")
    meta = {key[len(_META):]: arrays.pop(key) for key in list(arrays) if key.startswith(_META)}
    if "architecture_hash" not in meta:
        raise ValueError(f"path: {path} was not written by save_params (it has no "
                         f"{_META}architecture_hash entry); for a plain .npz of arrays "
                         f"keyed like PARAM_SHAPES use numpy.load")
    problems = []
    missing = [k for k in PARAM_SHAPES if k not in arrays]
    extra = [k for k in arrays if k not in PARAM_SHAPES]
    if missing:
        problems.append(f"keys missing from the file: {', '.join(missing)}")
    if extra:
        problems.append(f"keys not in this module: {', '.join(extra)}")
    shapes = [f"{k!r} {arrays[k].shape} in the file, {shape} here"
              for k, shape in PARAM_SHAPES.items() if k in arrays and arrays[k].shape != shape]
    if shapes:
        problems.append(f"shapes: {'; '.join(shapes)}")
    dtype = str(meta.get("dtype", ""))
    if dtype != DTYPE.name:
        problems.append(f"dtype: {dtype} in the file, {DTYPE.name} here (load it with the "
                        f"{dtype} module and convert the arrays)")
    if str(meta["architecture_hash"]) != ARCHITECTURE_HASH or problems:
        try:
            theirs = json.loads(str(meta.get("architecture", "")))
        except ValueError:
            theirs = None
        if theirs is not None:
            ours = _unnamed()
            rest = [d for d in _architecture_differences(theirs, ours)
                    if not d.startswith("dtype:")]
            # a layer's input and output shapes follow from its options
            rest = [d for d in rest if not any(f".{f}{e}" in d.split(":")[0] + ":"
                                               for f in ("in", "out") for e in ("[", ":"))
                    ] or rest
            if rest:
                more = f" (and {len(rest) - 6} more)" if len(rest) > 6 else ""
                problems.append(f"architecture: {'; '.join(rest[:6])}{more}")
        if not problems:
            problems.append(f"architecture hash {str(meta['architecture_hash'])[:12]}... "
                            f"in the file, {ARCHITECTURE_HASH[:12]}... here")
        raise ValueError(f"path: {path} holds the parameters of another architecture: "
                         + "; ".join(problems))
    bad = [k for k in PARAM_SHAPES if arrays[k].dtype != DTYPE]
    if bad:
        raise ValueError(f"path: {path}: parameter {bad[0]!r} is stored as "
                         f"{arrays[bad[0]].dtype}, not {DTYPE.name}")
    return {k: numpy.ascontiguousarray(arrays[k], dtype=DTYPE) for k in PARAM_SHAPES}
