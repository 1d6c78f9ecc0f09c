"""The C module's CPython entry points (bpgen/backends/c/runtime/fastcall.c):
forward, loss, loss_and_grad and hvp handled in C on the common case give
bit-for-bit the Python path's results (``mod._python_<name>``), and every
other case goes to the Python path with its own ValueError; several threads
at once, the workspace kept and released, fresh gradients every call."""
import collections
import concurrent.futures
import importlib.util
import sys
import threading

import numpy as np
import pytest

from bpgen.check import sample_point
from bpgen.spec import load_spec

from test_generated import sampled_arch
from test_recurrent import CASES as RECURRENT
from test_second_order import CASES as SECOND_ORDER

ENTRIES = ("forward", "loss", "loss_and_grad", "hvp")


def _built(cid):
    """test_recurrent.py's C case ``cid`` (an architecture built there anyway)."""
    return next(c["arch"] for c in RECURRENT if c["id"] == cid and c["in_c"])


# architectures whose C modules other suites build anyway (test_second_order.py,
# test_recurrent.py, test_generated.py's sample): no compile of this file's own
ARCHS = {
    "mlp_ce64": SECOND_ORDER["dense-relu-sce-l2"][0],
    "mlp_mse32": sampled_arch("mse", "float32"),
    "mlp_bce64": SECOND_ORDER["dense-gelu-bce"][0],
    # a layernorm between dense layers
    "ln_ce64": SECOND_ORDER["layernorm-tanh-sce"][0],
    # labels at every step (time-major)
    "gru_ce_all": _built("gru-all-kNone-float64-sof"),
    # float32, a float target at every step (moved time-major), truncated BPTT
    "lstm_bce_all32": _built("lstm-all-k2-float32-sig"),
    # only the last step scored: y without a step axis, forward still (N, T, K)
    "rnn_mse_last": _built("rnn_relu-last-k2-float64-mse"),
    "cnn_ce": SECOND_ORDER["conv-max-sce"][0],
}

def _counts(mod):
    return mod._fastcall_counts()


def _same(a, b):
    """Bit-for-bit equal results (floats, arrays, dicts of arrays, tuples)."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return type(b) is float and np.float64(a).tobytes() == np.float64(b).tobytes()
    return (type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
            and a.flags.c_contiguous and a.tobytes() == b.tobytes())


def _v(mod):
    """hvp's direction: a fixed dict shaped like the parameters."""
    return mod.unflatten(np.linspace(-1, 1, mod.N_PARAMS).astype(mod.DTYPE))


def _call(mod, name, args, python=False):
    """name(params, x[, y[, v]]) from args = (params, x, y[, v])."""
    fn = getattr(mod, ("_python_" if python else "") + name)
    if name == "forward":
        return fn(*args[:2])
    if name == "hvp":
        return fn(*args[:3], args[3] if len(args) > 3 else _v(mod))
    return fn(*args[:3])


def _outcome(mod, name, args, python=False):
    """("ok", result) or (exception type, message)."""
    try:
        return "ok", _call(mod, name, args, python)
    except Exception as exc:        # noqa: BLE001 -- compared with the Python path's
        return type(exc), str(exc)


def _point(arch, mod, n, seed=0):
    return sample_point(load_spec(arch), mod, batch=n, seed=seed)


@pytest.mark.parametrize("aid", list(ARCHS))
def test_fast_path_gives_the_python_paths_bits(builder, aid):
    arch = ARCHS[aid]
    mod = builder(arch, "c")
    assert mod._FASTCALL == ENTRIES
    for n in (1, 2, 7, 40, 3):          # growing and shrinking workspace
        params, x, y = _point(arch, mod, n, seed=n)
        saved = [a.copy() for a in (x, np.asarray(y), *params.values())]
        for name in ENTRIES:
            before = _counts(mod)[name]
            fast = _call(mod, name, (params, x, y))
            after = _counts(mod)[name]
            assert after == (before[0] + 1, before[1]), (aid, n, name, "not handled in C")
            slow = _call(mod, name, (params, x, y), python=True)
            assert _same(fast, slow), (aid, n, name)
        for a, b in zip(saved, (x, np.asarray(y), *params.values())):
            assert a.tobytes() == b.tobytes(), "an input was modified"
    if mod.LOSS == "softmax_cross_entropy":      # every integer dtype of labels
        params, x, y = _point(arch, mod, 5, seed=9)
        want = mod._python_loss_and_grad(params, x, y)
        for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                   np.uint64, np.intc, np.uintc, np.longlong, np.ulonglong):
            before = _counts(mod)["loss_and_grad"][0]
            assert _same(mod.loss_and_grad(params, x, y.astype(dt)), want), dt
            assert _counts(mod)["loss_and_grad"][0] == before + 1, dt


def test_signature_docs_and_keywords(builder):
    arch = ARCHS["mlp_ce64"]
    mod = builder(arch, "c")
    params, x, y = _point(arch, mod, 3)
    for name in ENTRIES:
        fn, py = getattr(mod, name), getattr(mod, "_python_" + name)
        assert fn.__doc__ == py.__doc__ and fn.__name__ == name
        assert fn.__code__.co_varnames[:fn.__code__.co_argcount] == \
            py.__code__.co_varnames[:py.__code__.co_argcount]
    before = _counts(mod)["loss_and_grad"]
    assert _same(mod.loss_and_grad(y=y, x=x, params=params), mod._python_loss_and_grad(
        params, x, y))
    assert _counts(mod)["loss_and_grad"] == (before[0] + 1, before[1])
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'y'"):
        mod.loss_and_grad(params, x)
    # the C entry point itself: anything but its positional arguments goes
    # to the Python implementation (the same TypeError)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'y'"):
        mod._c_loss_and_grad(params, x)
    assert _same(mod._c_loss_and_grad(params, x, y=y), mod._python_loss_and_grad(params, x, y))


def _hostile_cases(mod, params, x, y):
    """(description, (params, x, y)) the fast path must hand to the Python path."""
    key0 = next(iter(params))
    other = np.float32 if mod.DTYPE == np.float64 else np.float64
    swapped = x.astype(x.dtype.newbyteorder())
    unaligned = np.frombuffer(b"\0" + x.tobytes(), dtype=x.dtype, offset=1).reshape(x.shape)

    v = _v(mod)

    def p(**change):
        q = dict(params)
        q.update(change)
        return q
    cases = [
        ("params a list", (list(params.values()), x, y)),
        ("params an OrderedDict", (collections.OrderedDict(params), x, y)),
        ("params missing a key", ({k: v for k, v in params.items() if k != key0}, x, y)),
        ("params with an extra key", (p(extra=np.zeros(1)), x, y)),
        ("params with the wrong shape", (p(**{key0: params[key0][..., :1]}), x, y)),
        ("params of another dtype", (p(**{key0: params[key0].astype(other)}), x, y)),
        ("params Fortran order", (p(**{key0: np.asfortranarray(params[key0])}), x, y)),
        ("params as lists", (p(**{key0: params[key0].tolist()}), x, y)),
        ("params with NaN", (p(**{key0: np.full_like(params[key0], np.nan)}), x, y)),
        ("params with inf", (p(**{key0: np.full_like(params[key0], np.inf)}), x, y)),
        ("params a matrix subclass", (p(**{key0: params[key0].view(_Sub)}), x, y)),
        ("x a list", (params, x.tolist(), y)),
        ("x of another dtype", (params, x.astype(other), y)),
        ("x of integers", (params, np.round(x).astype(np.int32), y)),
        ("x byte-swapped", (params, swapped, y)),
        ("x unaligned", (params, unaligned, y)),
        ("x Fortran order", (params, np.asfortranarray(x), y)),
        ("x empty", (params, x[:0], y[:0])),
        ("x one axis less", (params, x[0], y)),
        ("x with NaN", (params, np.where(x == x.flat[0], np.nan, x), y)),
        ("x with inf", (params, np.where(x == x.flat[0], -np.inf, x), y)),
        ("y one sample less", (params, x, y[:-1])),
        ("y as a list", (params, x, np.asarray(y).tolist())),
        ("y a scalar", (params, x, 1)),
        ("y None", (params, x, None)),
        # hvp's v (the other entry points ignore it)
        ("v a list", (params, x, y, list(v.values()))),
        ("v missing a key", (params, x, y, {k: a for k, a in v.items() if k != key0})),
        ("v of another dtype", (params, x, y, {k: a.astype(other) for k, a in v.items()})),
        ("v with NaN", (params, x, y, dict(v, **{key0: np.full_like(v[key0], np.nan)}))),
        ("v Fortran order", (params, x, y, dict(v, **{key0: np.asfortranarray(v[key0])}))),
    ]
    if mod.LOSS == "softmax_cross_entropy":
        k = mod.OUTPUT_UNITS
        cases += [
            ("labels too large", (params, x, np.where(y == y.flat[0], k, y))),
            ("labels negative", (params, x, np.where(y == y.flat[0], -1, y))),
            ("labels huge unsigned", (params, x, y.astype(np.uint64) + np.uint64(2**63))),
            ("labels float", (params, x, y.astype(mod.DTYPE))),
            ("labels bool", (params, x, y.astype(bool))),
            ("labels byte-swapped", (params, x, y.astype(y.dtype.newbyteorder()))),
            ("labels non-contiguous", (params, x, np.repeat(y, 2, axis=0)[::2])),
            ("labels one-hot", (params, x, np.eye(k, dtype=mod.DTYPE)[y])),
        ]
    else:
        cases += [
            ("y with NaN", (params, x, np.where(y == y.flat[0], np.nan, y))),
            ("y of another dtype", (params, x, y.astype(other))),
            ("y Fortran order", (params, x, np.asfortranarray(y))),
        ]
    if mod.LOSS == "sigmoid_binary_cross_entropy":
        cases += [("y above 1", (params, x, y + 1)), ("y below 0", (params, x, y - 1))]
    return cases


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize("aid", ["mlp_ce64", "mlp_mse32", "mlp_bce64", "gru_ce_all",
                                 "lstm_bce_all32"])
def test_other_cases_go_to_the_python_path(builder, aid):
    """Each gives exactly what the Python path gives: its ValueError (the
    same message) or its result (a safe conversion); never handled in C."""
    arch = ARCHS[aid]
    mod = builder(arch, "c")
    params, x, y = _point(arch, mod, 4, seed=3)
    if mod.LOSS == "softmax_cross_entropy":
        y = np.asarray(y)
    for what, args in _hostile_cases(mod, params, x, y):
        for name in ENTRIES:
            if name == "forward" and what.startswith(("y", "labels")):
                continue
            if name != "hvp" and what.startswith("v "):
                continue
            before = _counts(mod)[name]
            got = _outcome(mod, name, args)
            after = _counts(mod)[name]
            want = _outcome(mod, name, args, python=True)
            # NaN or inf parameters are not looked for: only a non-finite
            # result goes to the Python path (relu, say, may hide them)
            if not (what in ("params with NaN", "params with inf") and want[0] == "ok"):
                assert after == (before[0], before[1] + 1), (what, name, "handled in C")
            assert got[0] == want[0], (what, name, got, want)
            if got[0] == "ok":
                assert _same(got[1], want[1]), (what, name)
            else:
                assert got[1] == want[1], (what, name)


def test_batch_limit_is_read_at_every_call(builder):
    arch = ARCHS["mlp_ce64"]
    mod = builder(arch, "c")
    params, x, y = _point(arch, mod, 6)
    saved = mod.MAX_RESULT_BYTES
    try:
        for limit in (6 * mod._BYTES_PER_SAMPLE - 1, float(2**40), 2**200):
            mod.MAX_RESULT_BYTES = limit
            before = _counts(mod)["loss_and_grad"]
            got = _outcome(mod, "loss_and_grad", (params, x, y))
            want = _outcome(mod, "loss_and_grad", (params, x, y), python=True)
            assert got[0] == want[0]
            if got[0] == "ok":
                assert _same(got[1], want[1])
            else:
                assert "MAX_RESULT_BYTES" in got[1] and got[1] == want[1]
            fast = isinstance(limit, int) and limit >= 6 * mod._BYTES_PER_SAMPLE
            assert _counts(mod)["loss_and_grad"] == (before[0] + fast, before[1] + (not fast))
    finally:
        mod.MAX_RESULT_BYTES = saved


def test_gradients_are_fresh_every_call(builder):
    arch = ARCHS["mlp_ce64"]
    mod = builder(arch, "c")
    params, x, y = _point(arch, mod, 5)
    _, g1 = mod.loss_and_grad(params, x, y)
    keep = {k: v.copy() for k, v in g1.items()}
    _, g2 = mod.loss_and_grad(params, x, y)
    for k in g1:
        assert g1[k].flags.writeable and g1[k].flags.c_contiguous and g1[k].shape == \
            params[k].shape and g1[k].dtype == mod.DTYPE
        assert not np.shares_memory(g1[k], g2[k])
        for other in (*params.values(), x):
            assert not np.shares_memory(g1[k], other)
    for v in g2.values():
        v[...] = 7
    for k in g1:
        assert np.array_equal(g1[k], keep[k])
    f1, f2 = mod.forward(params, x), mod.forward(params, x)
    assert not np.shares_memory(f1, f2) and f1.base is None


def _run_many(mod, points, workers):
    def one(point):
        params, x, y = point
        return mod.loss_and_grad(params, x, y), mod.forward(params, x)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, points))


@pytest.mark.parametrize("aid", ["mlp_ce64", "gru_ce_all"])
def test_threads_at_once(builder, aid):
    """Threads with batch sizes small (the GIL kept) and large (the GIL let
    go around the generated function) at once, each with its workspace."""
    arch = ARCHS[aid]
    mod = builder(arch, "c")
    points = [_point(arch, mod, n, seed=n) for n in (3, 700, 1, 2000, 17)] * 6
    want = [(mod._python_loss_and_grad(*p), mod._python_forward(*p[:2])) for p in points]
    before = _counts(mod)["loss_and_grad"][0]
    got = _run_many(mod, points, 4)
    assert all(_same(a, b) for a, b in zip(got, want))
    assert _counts(mod)["loss_and_grad"][0] == before + len(points)


def test_release_workspace(builder):
    arch = ARCHS["lstm_bce_all32"]
    mod = builder(arch, "c")
    big, small = _point(arch, mod, 300, seed=1), _point(arch, mod, 2, seed=2)
    want_big, want_small = mod._python_loss_and_grad(*big), mod._python_loss_and_grad(*small)
    for _ in range(3):
        assert _same(mod.loss_and_grad(*big), want_big)
        mod.release_workspace()
        mod.release_workspace()          # twice: nothing left to free
        assert _same(mod.loss_and_grad(*small), want_small)
        assert _same(mod.loss_and_grad(*big), want_big)
    # in threads that end (their workspace goes with them)
    for _ in range(3):
        out = []
        t = threading.Thread(target=lambda: out.append(mod.loss_and_grad(*big)))
        t.start()
        t.join()
        assert _same(out[0], want_big)


def test_a_second_wrapper_of_the_same_extension(builder, monkeypatch):
    """The wrapper loaded again (the extension is then shared): each copy
    routes to its own Python functions; BPGEN_FASTCALL=0 keeps the Python path."""
    arch = ARCHS["mlp_mse32"]
    mod = builder(arch, "c")
    params, x, y = _point(arch, mod, 4)
    want = mod._python_loss_and_grad(params, x, y)
    for env, routed in (("1", True), ("0", False)):
        monkeypatch.setenv("BPGEN_FASTCALL", env)
        name = f"_fastcall_copy_{env}"
        spec = importlib.util.spec_from_file_location(name, mod.__file__)
        other = importlib.util.module_from_spec(spec)
        sys.modules[name] = other
        try:
            spec.loader.exec_module(other)
            assert other._FASTCALL == (ENTRIES if routed else ())
            assert _same(other.loss_and_grad(params, x, y), want)
            other.MAX_RESULT_BYTES = 1            # its own limit, not mod's
            with pytest.raises(ValueError, match="MAX_RESULT_BYTES"):
                other.loss_and_grad(params, x, y)
            assert _same(mod.loss_and_grad(params, x, y), want)
        finally:
            del sys.modules[name]


def test_a_wrapper_whose_shapes_differ_from_the_compiled_ones_keeps_the_python_path(builder):
    """The compiled shapes decide: a wrapper whose PARAM_SHAPES says
    otherwise (edited by hand, say) gets no entry points."""
    arch = ARCHS["mlp_ce64"]
    mod = builder(arch, "c")
    with open(mod.__file__, encoding="utf-8") as fh:
        text = fh.read()
    rows, cols = mod.PARAM_SHAPES["l0.W"]
    line = f'("l0.W", ({rows}, {cols})),'
    assert line in text
    path = mod.__file__[:-3] + "_edited.py"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text.replace(line, f'("l0.W", ({rows}, {cols + 1})),'))
    name = "_fastcall_edited"
    spec = importlib.util.spec_from_file_location(name, path)
    other = importlib.util.module_from_spec(spec)
    sys.modules[name] = other
    try:
        spec.loader.exec_module(other)
        assert other._FASTCALL == () and other._fastcall_counts() == {}
        assert not hasattr(other, "_python_loss_and_grad") or \
            other.loss_and_grad is other._python_loss_and_grad
    finally:
        del sys.modules[name]


def test_entry_points_are_left_out_of_unexpected_layouts():
    from types import SimpleNamespace

    from bpgen.backends.c.fastcall import _enabled
    shapes = [(2, 3), (3,)]
    prog = SimpleNamespace(inputs=("x", "y", "W", "b"))
    good = [(0, 0, 0, 1, 1), (0, 1, 0, 6, 3), (0, 7, 0, 3, 3)]
    for layout, want in ((good, True), (good[:2], False),
                         ([good[0], (0, 1, 0, 5, 3), good[2]], False),
                         ([good[0], (1, 1, 0, 6, 3), good[2]], False),
                         ([good[0], good[2], good[1]], False)):
        derived = SimpleNamespace(programs={"loss_and_grad": prog},
                                  layout=lambda name, layout=layout: layout)
        assert _enabled(derived, "loss_and_grad", shapes, 0, 3, False) is want, layout
    fwd = SimpleNamespace(inputs=("x", "W", "b"))
    for layout, seq, want in (([(0, 0, 3, 0, 3)], False, True), ([(0, 0, 12, 0, 3)], True, True),
                              ([(0, 0, 3, 0, 3)], True, False), ([(0, 0, 3, 1, 3)], False, False)):
        derived = SimpleNamespace(programs={"forward": fwd},
                                  layout=lambda name, layout=layout: layout)
        assert _enabled(derived, "forward", shapes, 4 if seq else 0, 3, seq) is want, layout
