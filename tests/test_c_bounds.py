"""Memory bounds of the generated C code, and the Python API under hostile
arrays.

1. Every C function of a module (``mod.lib.bpg_<name>`` for each name in
   ``mod._OUTPUTS``) is called directly, the way the wrapper calls it, but
   with every buffer inside a larger one: a canary region of PAD elements
   (a NaN with a payload of our own) before and after each input, the
   output and the workspace; the output and the workspace are filled with
   NaN.  After the call every canary and every input must be bit-for-bit
   unchanged (the C code writes only where the wrapper allocates, and never
   into its inputs), and every declared output entry must have been written
   (no NaN left: NaN read from the padding or from a workspace entry never
   written would also show up here), and equal what the wrapper returns.

2. The Python API of both backends with hostile arrays: other memory
   layouts, read-only, unaligned, byte-swapped, wrong dtypes, wrong shapes,
   an empty batch and a huge batch declared through a broadcast view.  Each
   gives the right answer or a ValueError naming the argument; inputs are
   never modified.  The huge batch runs in a child process with a limit on
   its address space, so that a failure cannot exhaust the machine.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bpgen.backends.c.emitter import PREFIX
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec

PAD = 64                        # canary elements before and after each buffer
#: a quiet NaN with a payload no arithmetic produces, per dtype
CANARY = {np.dtype("float64"): np.uint64(0x7FF8DEADBEEFCAFE),
          np.dtype("float32"): np.uint32(0x7FC0BEEF)}
UINT = {np.dtype("float64"): np.uint64, np.dtype("float32"): np.uint32,
        np.dtype("int64"): np.uint64}       # token ids (x of a tokens input)
CANARY[np.dtype("int64")] = CANARY[np.dtype("float64")]
BATCHES = (1, 3, 17)

ARCHS = {
    # dense MLP: tanh, layernorm, relu, softmax cross-entropy, l2
    "mlp": {"name": "bounds_mlp", "input": {"features": 6},
            "layers": [{"type": "dense", "units": 5, "activation": "tanh"},
                       {"type": "layernorm"},
                       {"type": "dense", "units": 4, "activation": "relu"},
                       {"type": "dense", "units": 3}],
            "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}},
    # LSTM scoring the last step, truncated BPTT, a dense head at every step
    "lstm": {"name": "bounds_lstm", "input": {"features": 3, "steps": 5},
             "layers": [{"type": "lstm", "units": 4}, {"type": "dense", "units": 2}],
             "loss": {"type": "mse", "steps": "last"}, "bptt": {"truncate": 2}},
    # small CNN: conv2d, maxpool2d, avgpool2d, flatten, dense
    "cnn": {"name": "bounds_cnn", "input": {"channels": 2, "height": 7, "width": 6},
            "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1,
                        "activation": "relu"},
                       {"type": "maxpool2d", "size": 2},
                       {"type": "avgpool2d", "size": 2, "stride": 1},
                       {"type": "flatten"},
                       {"type": "dense", "units": 3}],
            "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}},
    # float32: sigmoid and softplus, binary cross-entropy
    "f32": {"name": "bounds_f32", "dtype": "float32", "input": {"features": 5},
            "layers": [{"type": "dense", "units": 4, "activation": "sigmoid"},
                       {"type": "dense", "units": 4, "activation": "softplus"},
                       {"type": "dense", "units": 2}],
            "loss": "sigmoid_binary_cross_entropy"},
}
#: more layer types, for scripts/sanitize.sh (BPGEN_BOUNDS_ALL=1): too dear
#: to compile in the default run, where test_recurrent.py covers them
EXTRA_ARCHS = {
    # Elman rnn (relu) then layernorm at every step, softmax over every step
    "rnn": {"name": "bounds_rnn", "input": {"features": 2, "steps": 4},
            "layers": [{"type": "rnn", "units": 3, "activation": "relu"},
                       {"type": "layernorm"}, {"type": "dense", "units": 3}],
            "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}},
    # float32 gru, binary cross-entropy over every step, truncated
    "gru": {"name": "bounds_gru", "dtype": "float32", "input": {"features": 3, "steps": 4},
            "layers": [{"type": "gru", "units": 3}, {"type": "dense", "units": 2}],
            "loss": "sigmoid_binary_cross_entropy", "bptt": {"truncate": 3}},
    # birnn of rnn cells (tanh), last step
    "birnn": {"name": "bounds_birnn", "input": {"features": 2, "steps": 3},
              "layers": [{"type": "birnn", "units": 2}, {"type": "dense", "units": 2}],
              "loss": {"type": "mse", "steps": "last"}},
    # token ids, embedding with positions, a pre-norm residual block with
    # causal attention, a dense head at every step
    "transformer": {"name": "bounds_tf", "input": {"tokens": 5, "steps": 3},
                    "layers": [{"type": "embedding", "units": 4, "positions": True},
                               {"type": "block", "residual": True, "layers": [
                                   {"type": "layernorm"},
                                   {"type": "attention", "heads": 2, "causal": True}]},
                               {"type": "dense", "units": 3}],
                    "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}},
}
if os.environ.get("BPGEN_BOUNDS_ALL", "") == "1":
    ARCHS.update(EXTRA_ARCHS)


def _tol(mod):
    return 1e-12 if mod.DTYPE == np.float64 else 1e-5


def _point(arch, mod, n, seed=0):
    params, x, y = sample_point(load_spec(arch), mod, batch=n, seed=seed)
    v = sample_point(load_spec(arch), mod, batch=1, seed=seed + 100)[0]
    return params, x, y, v


# ---------------------------------------------------------------------------
# 1. direct calls of every C function with canaries around every buffer


def _signatures(mod):
    """name -> the names of bpg_<name>'s pointer inputs (between N and out, ws)."""
    sigs = {}
    for m in re.finditer(r"void bpg_(\w+)\(([^)]*)\);", mod.CDEF):
        # without a real scalar (clipped_grad's max_norm)
        names = [re.split(r"[\s*]+", arg.strip())[-1] for arg in m.group(2).split(",")
                 if "*" in arg or arg.split()[0] not in ("double", "float")]
        if names[-2:] == ["out", "ws"]:
            assert names[0] == "N", m.group(0)
            # graph variables are printed under the C prefix (bpgen.backends.c.emitter)
            assert all(n.startswith(PREFIX) for n in names[1:-2]), m.group(0)
            sigs[m.group(1)] = [n[len(PREFIX):] for n in names[1:-2]]
    return sigs


def _padded(values, size, dtype, fill=None):
    """(whole buffer, its middle of ``size`` elements): canaries around
    ``values`` (flattened), or around ``fill`` (a scalar) when values is None."""
    buf = np.empty(size + 2 * PAD, dtype=dtype)
    buf.view(UINT[dtype])[:] = CANARY[dtype]
    mid = buf[PAD:PAD + size]
    if values is not None:
        mid[:] = values.ravel()
    else:
        mid[:] = fill
    return buf, mid


def _canaries_intact(buf, size, dtype):
    bits = buf.view(UINT[dtype])
    return bool((bits[:PAD] == CANARY[dtype]).all() and (bits[PAD + size:] == CANARY[dtype]).all())


@pytest.mark.parametrize("aid", list(ARCHS))
def test_c_functions_stay_in_bounds_and_write_every_output(builder, aid):
    arch = ARCHS[aid]
    mod = builder(arch, "c")
    dtype = mod.DTYPE
    sigs = _signatures(mod)
    assert set(mod._OUTPUTS) <= set(sigs), "every function of _OUTPUTS is in the CDEF"
    for n in BATCHES:
        params, x, y, v = _point(arch, mod, n, seed=n)
        xm, nn = mod._check_x(x)
        assert nn == n
        arrays = {"x": xm, "y": mod._check_y(y, n, xm)}
        # a sequence's masks (some padding: the shortest sample has one step)
        if mod.STEPS:
            lengths = np.maximum(1, mod.STEPS - np.arange(n))
            arrays.update(zip(("mask", "cut_mask"), mod._masks(lengths, n)))
        for key, mat, vmat in zip(mod.PARAM_SHAPES, mod._check_params(params),
                                  mod._check_params(v, "v")):
            arrays[key.replace(".", "_")] = mat
            arrays["v_" + key.replace(".", "_")] = vmat
        for name in mod._OUTPUTS:
            what = f"bpg_{name}, N={n}"
            inputs = [arrays[arg] for arg in sigs[name]]
            expected = mod._call(name, n, inputs)          # the wrapper's own call
            a, b = mod._OUT_SIZE[name]
            out_size = a * n + b
            wa, wb = mod._WS[name]
            ws_size = wa * n + wb
            assert 0 < out_size <= expected.size, what
            padded_in = [_padded(arr, arr.size, arr.dtype) for arr in inputs]
            saved_in = [buf.copy() for buf, _ in padded_in]
            out_buf, out = _padded(None, out_size, dtype, fill=np.nan)
            ws_buf, ws = _padded(None, ws_size, dtype, fill=np.nan)
            fb, ptr = mod.ffi.from_buffer, mod._PTR
            getattr(mod.lib, "bpg_" + name)(
                n, *[fb("int64_t *" if mid.dtype.kind == "i" else ptr, mid)
                     for _, mid in padded_in],
                fb(ptr, out, require_writable=True), fb(ptr, ws, require_writable=True))
            for (buf, _), saved, arg in zip(padded_in, saved_in, sigs[name]):
                assert np.array_equal(buf.view(UINT[buf.dtype]), saved.view(UINT[buf.dtype])), \
                    f"{what}: input {arg} (or its canaries) modified"
            assert _canaries_intact(out_buf, out_size, dtype), f"{what}: wrote outside out"
            assert _canaries_intact(ws_buf, ws_size, dtype), f"{what}: wrote outside ws"
            unwritten = np.flatnonzero(np.isnan(out))
            assert unwritten.size == 0, (
                f"{what}: {unwritten.size} of {out_size} output entries NaN (first at "
                f"{unwritten[:8]}): never written, or computed from NaN read past an "
                f"input or from workspace entries never written")
            assert rel_err(out, expected[:out_size]) <= _tol(mod), \
                f"{what}: differs from the wrapper's call"


@pytest.mark.parametrize("aid", ["mlp", "lstm", "cnn"])
def test_hessian_columns_stay_in_bounds(builder, aid):
    """bpg_hessian_columns (its own signature: first and count rows of the
    Hessian, kc directions at a time) writes exactly count x N_PARAMS
    outputs and stays in its workspace; its rows equal hvp of the unit
    vectors.  The MLP's and the LSTM's tangent part runs over kc directions
    at once, the CNN's one direction at a time."""
    arch = ARCHS[aid]
    mod = builder(arch, "c")
    dtype, p = mod.DTYPE, mod.N_PARAMS
    assert (mod._WS_DIR["hessian_columns"] != (0, 0)) == (aid != "cnn")
    params, x, y, _ = _point(arch, mod, 3, seed=2)
    xm, n = mod._check_x(x)
    lengths = np.maximum(1, mod.STEPS - np.arange(n)) if mod.STEPS else None
    masks = mod._masks(lengths, n) if mod.STEPS else []
    inputs = [xm, *masks, mod._check_y(y, n, xm), *mod._check_params(params)]
    for first, count, kc in ((0, 1, 1), (p - 3, 3, 2), (p // 2, min(5, p - p // 2), 5),
                             (0, p, 4)):
        out_buf, out = _padded(None, count * p, dtype, fill=np.nan)
        wa, wb = mod._WS["hessian_columns"]
        da, db = mod._WS_DIR["hessian_columns"]       # per direction of a chunk
        ws_size = wa * n + wb + kc * (da * n + db)
        ws_buf, ws = _padded(None, ws_size, dtype, fill=np.nan)
        fb, ptr = mod.ffi.from_buffer, mod._PTR
        mod.lib.bpg_hessian_columns(n, *[fb(ptr, a) for a in inputs], mod.ffi.NULL,
                                    fb(ptr, out, require_writable=True),
                                    fb(ptr, ws, require_writable=True), first, count, kc)
        assert _canaries_intact(out_buf, count * p, dtype)
        assert _canaries_intact(ws_buf, ws_size, dtype)
        assert not np.isnan(out).any()
        for j in range(count):
            e = np.zeros(p, dtype=dtype)
            e[first + j] = 1
            want = mod.flatten(mod.hvp(params, x, y, mod.unflatten(e), lengths=lengths))
            assert rel_err(out[j * p:(j + 1) * p], want) <= _tol(mod)


def test_canaries_catch_a_write_past_the_end(builder):
    """The check above can fail: declare an output one element too short
    and the C code's last write lands in the canary."""
    arch = ARCHS["mlp"]
    mod = builder(arch, "c")
    params, x, _, _ = _point(arch, mod, 3)
    xm, n = mod._check_x(x)
    a, b = mod._OUT_SIZE["forward"]
    size = a * n + b - 1
    out_buf, out = _padded(None, size, mod.DTYPE, fill=np.nan)
    wa, wb = mod._WS["forward"]
    ws = np.empty(wa * n + wb + 1, dtype=mod.DTYPE)
    fb, ptr = mod.ffi.from_buffer, mod._PTR
    mod.lib.bpg_forward(n, fb(ptr, xm), *[fb(ptr, m) for m in mod._check_params(params)],
                        fb(ptr, out, require_writable=True), fb(ptr, ws, require_writable=True))
    assert not _canaries_intact(out_buf, size, mod.DTYPE)
    assert not np.isnan(out).any()


# ---------------------------------------------------------------------------
# 2. the Python API under hostile arrays, both backends

HOSTILE_ARCHS = ("mlp", "lstm", "cnn", "f32")


def _results(mod, params, x, y, v):
    """Everything the checked functions return, as one flat float64 vector."""
    value, grads = mod.loss_and_grad(params, x, y)
    parts = [mod.forward(params, x).ravel(), [mod.loss(params, x, y), value],
             mod.flatten(grads), mod.flatten(mod.hvp(params, x, y, v)),
             mod.flatten(mod.ggn_vp(params, x, y, v))]
    for u, w in mod.grad_factors(params, x, y).values():
        parts += [u.ravel(), w.ravel()]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def _fortran(a):
    return np.asfortranarray(a)


def _strided(a):
    """The same values, every second element of a larger array's last axis."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _reversed(a):
    """The same values through a negative stride."""
    return np.flip(np.flip(a, 0).copy(), 0)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _unaligned(a):
    """A C-contiguous array of the same dtype at an odd address."""
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(raw[1:1 + a.nbytes], dtype=a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<"))


#: same values, other memory layouts: the answer must be the same
LAYOUTS = {"fortran": _fortran, "strided": _strided, "reversed": _reversed,
           "readonly": _readonly, "byteswapped": _byteswapped,
           "list": lambda a: a.tolist()}
#: dtypes that must be refused with a ValueError naming the argument
BAD_DTYPES = {"object": lambda a: a.astype(object), "complex": lambda a: a.astype(complex),
              "string": lambda a: a.astype(str), "bytes": lambda a: a.astype(bytes)}


def _argument(mod, params, x, y, v, which):
    """(the array named ``which``, a function putting a replacement in place,
    the name the error must start with)."""
    if which == "x":
        return x, lambda a: (params, a, y, v), "x"
    if which == "y":
        return y, lambda a: (params, x, a, v), "y"
    kind, key = which.split(":")
    src = params if kind == "params" else v

    def put(a):
        new = dict(src)
        new[key] = a
        return (new, x, y, v) if kind == "params" else (params, x, y, new)
    return src[key], put, f"{kind}[{key!r}]"


def _hostile_args(mod):
    keys = list(mod.PARAM_SHAPES)
    return ["x", "y", f"params:{keys[0]}", f"params:{keys[1]}", f"v:{keys[0]}"]


def _snapshot(args):
    params, x, y, v = args

    def copy(a):
        return np.array(a, copy=True) if isinstance(a, np.ndarray) else a
    return ({k: copy(a) for k, a in params.items()}, copy(x), copy(y),
            {k: copy(a) for k, a in v.items()})


def _same_inputs(before, after):
    def eq(a, b):
        if isinstance(a, np.ndarray):
            return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        return a == b
    pb, xb, yb, vb = before
    pa, xa, ya, va = after
    return (eq(xb, xa) and eq(yb, ya) and all(eq(pb[k], pa[k]) for k in pb)
            and all(eq(vb[k], va[k]) for k in vb))


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", HOSTILE_ARCHS)
def test_other_layouts_give_the_same_answer(builder, aid, backend):
    arch = ARCHS[aid]
    mod = builder(arch, backend)
    base = _point(arch, mod, 4, seed=1)
    expected = _results(mod, *base)
    failures = []
    for which in _hostile_args(mod):
        arr, put, _ = _argument(mod, *base, which)
        for lid, layout in LAYOUTS.items():
            if lid == "strided" and arr.ndim == 0:
                continue
            args = put(layout(arr))
            before = _snapshot(args)
            try:
                got = _results(mod, *args)
            except Exception as exc:      # noqa: BLE001 -- reported below
                failures.append(f"{which} {lid}: {type(exc).__name__}: {exc}")
                continue
            if rel_err(got, expected) > _tol(mod):
                failures.append(f"{which} {lid}: wrong answer (rel err "
                                f"{rel_err(got, expected):.2e})")
            if not _same_inputs(before, args):
                failures.append(f"{which} {lid}: an input was modified")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", ["mlp", "f32"])
def test_unaligned_arrays_give_the_same_answer(builder, aid, backend):
    """C-contiguous arrays of the module's dtype at an odd address (e.g.
    from numpy.frombuffer): the same answer.  (In C, reading them in place
    is undefined behaviour, see test_c_gets_no_unaligned_pointers; on x86-64
    it happens to work, under UBSan it aborts: scripts/sanitize.sh skips
    this test.)"""
    arch = ARCHS[aid]
    mod = builder(arch, backend)
    base = _point(arch, mod, 4, seed=1)
    expected = _results(mod, *base)
    for which in _hostile_args(mod):
        arr, put, _ = _argument(mod, *base, which)
        if arr.dtype != mod.DTYPE:
            continue                  # labels: copied into a one-hot matrix anyway
        args = put(_unaligned(arr))
        before = _snapshot(args)
        assert rel_err(_results(mod, *args), expected) <= _tol(mod), which
        assert _same_inputs(before, args), which


class _RecordingFFI:
    """Stands in for a C module's ``ffi``: records the alignment of every
    buffer handed to C."""

    def __init__(self, ffi):
        self._ffi = ffi
        self.misaligned = []

    def __getattr__(self, name):
        return getattr(self._ffi, name)

    def from_buffer(self, ctype, buf, **kw):
        arr = np.asarray(buf)
        if arr.ctypes.data % arr.dtype.itemsize:
            self.misaligned.append((arr.shape, hex(arr.ctypes.data)))
        return self._ffi.from_buffer(ctype, buf, **kw)


def test_c_gets_no_unaligned_pointers(builder, monkeypatch):
    arch = ARCHS["mlp"]
    mod = builder(arch, "c")
    params, x, y, v = _point(arch, mod, 4, seed=1)
    rec = _RecordingFFI(mod.ffi)
    monkeypatch.setattr(mod, "ffi", rec)
    mod.loss_and_grad(params, x, y)
    assert not rec.misaligned, "aligned arrays only"
    ux, up = _unaligned(x), {k: _unaligned(a) for k, a in params.items()}
    mod.loss_and_grad(up, ux, y)
    mod.hvp(up, ux, y, {k: _unaligned(a) for k, a in v.items()})
    assert not rec.misaligned, f"misaligned buffers passed to C (shape, address): {rec.misaligned}"


def _label_args(mod):
    return mod.LOSS == "softmax_cross_entropy"


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", HOSTILE_ARCHS)
def test_wrong_dtypes_and_shapes_are_value_errors(builder, aid, backend):
    arch = ARCHS[aid]
    mod = builder(arch, backend)
    base = _point(arch, mod, 4, seed=2)
    # (description, args, what the ValueError's message starts with, or
    # ("same", results) for a safe cast that must give the converted values' answer)
    cases = []
    for which in _hostile_args(mod):
        arr, put, name = _argument(mod, *base, which)
        for did, bad in BAD_DTYPES.items():
            cases.append((f"{which} {did}", put(bad(arr)), name))
        labels = which == "y" and _label_args(mod)
        if labels:
            cases += [(f"{which} float labels", put(arr.astype(mod.DTYPE)), name),
                      (f"{which} bool labels", put(arr.astype(bool)), name)]
        else:
            # safe casts: the same answer as the converted values; others refused
            wide = mod.DTYPE == np.float32
            safe = (np.float16, np.int8, np.bool_) if wide else (np.float32, np.int32, np.bool_)
            for sub in safe:
                cast = arr.astype(sub)
                conv = put(cast.astype(mod.DTYPE))
                cases.append((f"{which} {np.dtype(sub).name}", put(cast),
                              ("same", _results(mod, *conv))))
            if wide:
                for sub in (np.float64, np.int64):
                    cases.append((f"{which} {np.dtype(sub).name} into float32",
                                  put(arr.astype(sub)), name))
        # wrong shapes
        cases += [(f"{which} one axis less", put(arr[0]), name),
                  (f"{which} one axis more", put(arr[None]), name),
                  (f"{which} scalar", put(np.asarray(arr).ravel()[0]), name)]
        if which in ("x", "y"):
            # x and y disagree on N: x sets N, so y is the one named
            cases.append((f"{which} one sample less", put(arr[:-1]), "y"))
        else:
            cases.append((f"{which} one row more", put(np.concatenate([arr, arr[:1]])), name))
        if arr.ndim >= 2 and arr.shape[-1] != arr.shape[-2]:
            cases.append((f"{which} transposed", put(np.swapaxes(arr, -1, -2)), name))
        if arr.ndim >= 2:
            cases.append((f"{which} last axis longer",
                          put(np.concatenate([arr, arr[..., :1]], axis=-1)), name))
    params, x, y, v = base
    # an empty batch, and ragged input
    cases.append(("x, y empty (N = 0)", (params, x[:0], y[:0], v), "x"))
    cases.append(("x ragged list", (params, [[1.0, 2.0], [3.0]], y, v), "x"))
    failures = []
    for desc, args, want in cases:
        before = _snapshot(args)
        try:
            got = _results(mod, *args)
        except ValueError as exc:
            msg = str(exc)
            if isinstance(want, tuple) or not msg.startswith(want):
                failures.append(f"{desc}: ValueError not naming {want!r}: {msg}")
        except Exception as exc:  # noqa: BLE001 -- reported below
            failures.append(f"{desc}: {type(exc).__name__} (not ValueError): {exc}")
        else:
            if isinstance(want, tuple):
                if rel_err(got, want[1]) > _tol(mod):
                    failures.append(f"{desc}: wrong answer")
            else:
                failures.append(f"{desc}: accepted, expected a ValueError naming {want!r}")
        if not _same_inputs(before, args):
            failures.append(f"{desc}: an input was modified")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_hmp_matrix_argument(builder, backend):
    arch = ARCHS["mlp"]
    mod = builder(arch, backend)
    params, x, y, _ = _point(arch, mod, 3, seed=4)
    V = np.random.default_rng(0).standard_normal((mod.N_PARAMS, 3))
    expected = mod.hmp(params, x, y, V)
    for desc, W in [("fortran", np.asfortranarray(V)), ("readonly", _readonly(V)),
                    ("strided", _strided(V)), ("byteswapped", _byteswapped(V)),
                    ("broadcast", np.broadcast_to(V[:, :1], V.shape))]:
        want = expected if desc != "broadcast" else np.repeat(expected[:, :1], 3, axis=1)
        before = np.array(W, copy=True)
        assert rel_err(mod.hmp(params, x, y, W), want) <= _tol(mod), desc
        assert np.array_equal(W, before), desc
    for desc, W in [("object", V.astype(object)), ("complex", V.astype(complex)),
                    ("string", V.astype(str)), ("one row less", V[:-1]), ("1-D", V[:, 0]),
                    ("3-D", V[None])]:
        with pytest.raises(ValueError, match=r"^V\b"):
            mod.hmp(params, x, y, W)


_HUGE_CHILD = textwrap.dedent("""
    import importlib.util, json, resource, sys
    import numpy as np
    path, extra, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    spec = importlib.util.spec_from_file_location("m", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params = mod.init_params(seed=0)
    x = np.broadcast_to(np.ones(mod.INPUT_SHAPE, dtype=mod.DTYPE), (n,) + mod.INPUT_SHAPE)
    if mod.LOSS == "softmax_cross_entropy":
        lead = (n, mod.STEPS) if mod.LOSS_ALL_STEPS else (n,)
        y = np.broadcast_to(np.zeros((), dtype=np.int64), lead)
    else:
        lead = (n, mod.STEPS) if mod.LOSS_ALL_STEPS else (n,)
        y = np.broadcast_to(np.zeros((), dtype=mod.DTYPE), lead + (mod.OUTPUT_UNITS,))
    with open("/proc/self/status") as fh:
        size = [int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:")][0]
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    res = {}
    for fn, call in [("forward", lambda: mod.forward(params, x)),
                     ("loss", lambda: mod.loss(params, x, y)),
                     ("loss_and_grad", lambda: mod.loss_and_grad(params, x, y))]:
        try:
            call()
            res[fn] = ["ok", ""]
        except Exception as exc:
            res[fn] = [type(exc).__name__, str(exc)[:200]]
    print(json.dumps(res))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS, /proc")
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_huge_batch_through_a_broadcast_view(builder, backend):
    """x of shape (10**9, F) as a broadcast view of one sample: the result
    cannot fit in memory, so a ValueError naming x (or a MemoryError before
    any computation), never a crash.  A child process with its address space
    limited to ~2 GiB more than it starts with runs it."""
    arch = ARCHS["mlp"]
    mod = builder(arch, backend)
    proc = subprocess.run([sys.executable, "-c", _HUGE_CHILD, mod.__file__, str(2 * 2**30),
                           str(10**9)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert proc.returncode == 0, f"child crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = {fn: r for fn, r in res.items() if not (r[0] == "ValueError" and r[1].startswith("x"))}
    assert not bad, f"not a ValueError naming x: {bad}"
