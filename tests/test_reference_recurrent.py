"""Checks of the reference's recurrent layers (rnn, lstm, gru, birnn), sequence
losses and truncated BPTT.

Exact gradients are compared with central finite differences of the loss.
Truncated gradients are compared with finite differences of a *surrogate*
loss, computed by a forward pass written here independently of
bpgen.reference: every recurrent cell runs chunk by chunk, and the state
entering each chunk is a constant recorded from an unperturbed full forward
pass -- so the surrogate's gradient at the recording point is exactly the
gradient with the state detached between chunks.
"""
import math

import numpy as np
import pytest

from bpgen import reference as ref
from bpgen.spec import validate

LOSSES = ["mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy"]
N, T, F = 3, 5, 3


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def seq_spec(layers, loss="mse", steps="all", t=T, f=F, l2=0.0, truncate=None):
    d = {"name": "seq", "input": {"features": f, "steps": t}, "layers": layers,
         "loss": {"type": loss, "steps": steps}}
    if l2:
        d["regularization"] = {"l2": l2}
    if truncate is not None:
        d["bptt"] = {"truncate": truncate}
    return validate(d, experimental=True)


def perturbed_params(spec, seed):
    """Glorot weights plus noise, non-zero biases (so every gradient matters)."""
    rng = np.random.default_rng(seed + 100)
    p = ref.init_params(spec, seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in p.items()}


# --------------------------------------------------------------------------
# an independent forward pass, with optional chunk-wise frozen states

def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


ACT = {
    "identity": lambda z, a: z,
    "tanh": lambda z, a: np.tanh(z),
    "relu": lambda z, a: np.maximum(z, 0.0),
    "sigmoid": lambda z, a: _sig(z),
    "leaky_relu": lambda z, a: np.where(z > 0, z, a * z),
}


def cell_step(cell, p, x_t, state, act):
    """One step of a cell; state is (h,) or (h, c).  Returns (state, h)."""
    if cell == "rnn":
        (h,) = state
        h = act(x_t @ p["Wx"] + h @ p["Wh"] + p["b"])
        return (h,), h
    if cell == "lstm":
        h, c = state
        i, f, g, o = np.split(x_t @ p["Wx"] + h @ p["Wh"] + p["b"], 4, axis=1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        return (h, c), h
    (h,) = state                                   # gru, PyTorch's equations
    xr, xz, xn = np.split(x_t @ p["Wx"] + p["bx"], 3, axis=1)
    hr, hz, hn = np.split(h @ p["Wh"] + p["bh"], 3, axis=1)
    r, z = _sig(xr + hr), _sig(xz + hz)
    n = np.tanh(xn + r * hn)
    h = (1 - z) * n + z * h
    return (h,), h


def run_cell(cell, p, xs, act, key, k, record, frozen):
    """Run a cell over xs (N, S, F) in reading order.  With ``frozen``, the
    state entering read step s (s a positive multiple of k) is replaced by the
    constant frozen[key, s]; with ``record``, those states are stored."""
    units = p["Wh"].shape[0]
    zero = np.zeros((xs.shape[0], units))
    state = (zero, zero) if cell == "lstm" else (zero,)
    outs = []
    for s in range(xs.shape[1]):
        if k and s > 0 and s % k == 0:
            if record is not None:
                record[key, s] = tuple(a.copy() for a in state)
            if frozen is not None:
                state = frozen[key, s]
        state, h = cell_step(cell, p, xs[:, s], state, act)
        outs.append(h)
    return np.stack(outs, axis=1)


def my_forward(spec, params, x, k=None, record=None, frozen=None):
    a = np.asarray(x, dtype=np.float64)
    for layer in spec.layers:
        def lp(prefix=""):
            pre = f"{layer.name}.{prefix}"
            return {key[len(pre):]: v for key, v in params.items() if key.startswith(pre)}
        act = lambda z, lay=layer: ACT[lay.activation](z, lay.alpha)
        if layer.type == "dense":
            a = act(a @ params[f"{layer.name}.W"] + params[f"{layer.name}.b"])
        elif layer.type == "birnn":
            hf = run_cell(layer.cell, lp("fwd."), a, act, (layer.name, "fwd"),
                          k, record, frozen)
            hb = run_cell(layer.cell, lp("bwd."), a[:, ::-1], act, (layer.name, "bwd"),
                          k, record, frozen)
            a = np.concatenate([hf, hb[:, ::-1]], axis=2)
        else:
            a = run_cell(layer.type, lp(), a, act, (layer.name,), k, record, frozen)
    return a


def my_loss(spec, params, x, y, **kw):
    out = my_forward(spec, params, x, **kw)
    if spec.loss.steps == "last":
        out = out[:, -1]
    count = math.prod(out.shape[:-1])
    if spec.loss.type == "mse":
        data = 0.5 * np.sum((out - y) ** 2)
    elif spec.loss.type == "softmax_cross_entropy":
        m = out.max(axis=-1, keepdims=True)
        logp = out - m - np.log(np.exp(out - m).sum(axis=-1, keepdims=True))
        data = -np.sum(np.take_along_axis(logp, y[..., None], axis=-1))
    else:
        s = _sig(out)
        data = -np.sum(y * np.log(s) + (1 - y) * np.log(1 - s))
    w2 = sum(np.sum(v ** 2) for key, v in params.items()
             if key.rsplit(".", 1)[-1] in ("W", "Wx", "Wh"))
    return float(data / count + 0.5 * spec.l2 * w2)


# --------------------------------------------------------------------------
# the cases

def rec(kind, units=3, **kw):
    return {"type": kind, "units": units, **kw}


def dense(units, activation="identity"):
    return {"type": "dense", "units": units, "activation": activation}


CASES = {
    # name: (layers, loss, steps, l2)
    "rnn_tanh": ([rec("rnn")], "mse", "all", 0.0),
    "rnn_relu": ([rec("rnn", 4, activation="relu"), dense(3)],
                 "softmax_cross_entropy", "last", 0.0),
    "rnn_sigmoid": ([rec("rnn", 2, activation="sigmoid"), dense(2)],
                    "sigmoid_binary_cross_entropy", "all", 0.05),
    "rnn_leaky": ([rec("rnn", 3, activation="leaky_relu", alpha=0.2)],
                  "mse", "last", 0.0),
    "lstm_all": ([rec("lstm")], "mse", "all", 0.02),
    "lstm_last": ([rec("lstm", 2), dense(3)], "softmax_cross_entropy", "last", 0.0),
    "gru_all": ([rec("gru"), dense(2, "tanh")], "sigmoid_binary_cross_entropy",
                "all", 0.0),
    "gru_last": ([rec("gru", 4)], "mse", "last", 0.01),
    "birnn_rnn": ([rec("birnn", 2, cell="rnn"), dense(3)],
                  "softmax_cross_entropy", "all", 0.0),
    "birnn_rnn_relu": ([rec("birnn", 2, cell="rnn", activation="relu")],
                       "mse", "last", 0.0),
    "birnn_lstm": ([rec("birnn", 2, cell="lstm"), dense(2)], "mse", "last", 0.03),
    "birnn_gru": ([rec("birnn", 3, cell="gru")], "sigmoid_binary_cross_entropy",
                  "all", 0.0),
    "stack_all_sce": ([rec("lstm"), rec("gru", 2), dense(3)],
                      "softmax_cross_entropy", "all", 0.01),
    "stack_last_mse": ([rec("lstm", 2), rec("gru", 3), dense(2)], "mse", "last", 0.0),
    "stack_last_bce": ([rec("gru", 2), rec("birnn", 2, cell="lstm"), dense(2, "tanh"),
                        dense(2)], "sigmoid_binary_cross_entropy", "last", 0.0),
    "stack_rnn_lstm": ([rec("rnn", 3), dense(3, "tanh"), rec("lstm", 2)],
                       "mse", "all", 0.0),
}


def make(case, seed=0, **kw):
    layers, loss, steps, l2 = CASES[case]
    spec = seq_spec(layers, loss, steps, l2=l2, **kw)
    params = perturbed_params(spec, seed)
    x, y = ref.random_batch(spec, N, seed=seed + 1)
    return spec, params, x, y


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_independent_implementation(case):
    spec, params, x, y = make(case, seed=3)
    out = ref.forward(spec, params, x)
    assert out.shape == (N,) + spec.output_shape and out.dtype == np.float64
    assert rel_err(out, my_forward(spec, params, x)) <= 1e-13
    assert ref.loss(spec, params, x, y) == pytest.approx(my_loss(spec, params, x, y),
                                                         rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_grad_matches_finite_differences(case):
    spec, params, x, y = make(case)
    value, grads = ref.loss_and_grad(spec, params, x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(ref.loss(spec, params, x, y), rel=1e-14)
    assert list(grads) == list(spec.param_shapes)
    fd = ref.finite_difference_grad(lambda q: ref.loss(spec, q, x, y), params)
    for key, shape in spec.param_shapes.items():
        assert grads[key].shape == tuple(shape) and grads[key].dtype == np.float64
        if spec.loss.steps == "last" and key.endswith("bwd.Wh"):
            # the loss reads the backward half only after its first step (h_0 = 0)
            assert np.allclose(grads[key], spec.l2 * params[key], rtol=1e-14), key
        else:
            assert np.any(grads[key] != 0), key
        assert rel_err(grads[key], fd[key]) <= 1e-6, (key, rel_err(grads[key], fd[key]))


TRUNC_CASES = ["rnn_tanh", "rnn_relu", "lstm_all", "lstm_last", "gru_all", "gru_last",
               "birnn_rnn", "birnn_lstm", "birnn_gru", "stack_all_sce",
               "stack_last_bce"]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("case", TRUNC_CASES)
def test_truncated_grad_matches_detached_surrogate(case, k):
    spec, params, x, y = make(case, seed=5, truncate=k)
    exact_spec = make(case, seed=5)[0]
    value, grads = ref.loss_and_grad(spec, params, x, y)
    exact_value, exact = ref.loss_and_grad(exact_spec, params, x, y)
    assert value == exact_value                     # truncation never changes the loss

    frozen = {}
    my_forward(spec, params, x, k=k, record=frozen)
    assert frozen                                   # T = 5 > k: there are boundaries
    fd = ref.finite_difference_grad(
        lambda q: my_loss(spec, q, x, y, k=k, frozen=frozen), params)
    assert my_loss(spec, params, x, y, k=k, frozen=frozen) == pytest.approx(value, rel=1e-12)
    changed = 0.0
    for key in spec.param_shapes:
        assert rel_err(grads[key], fd[key]) <= 1e-6, (key, rel_err(grads[key], fd[key]))
        changed = max(changed, rel_err(grads[key], exact[key]))
    assert changed > 1e-6                           # truncation does matter here


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm_last", "birnn_gru", "stack_last_bce"])
def test_truncate_at_least_steps_is_exact(case):
    spec0, params, x, y = make(case, seed=7)
    v0, g0 = ref.loss_and_grad(spec0, params, x, y)
    for k in (T, T + 3):
        spec = make(case, seed=7, truncate=k)[0]
        v, g = ref.loss_and_grad(spec, params, x, y)
        assert v == v0
        assert all(np.array_equal(g[key], g0[key]) for key in g0)


def test_truncate_overrides_and_exact_grad():
    spec0, params, x, y = make("birnn_lstm", seed=9)
    spec2 = make("birnn_lstm", seed=9, truncate=2)[0]
    _, g0 = ref.loss_and_grad(spec0, params, x, y)
    _, g2 = ref.loss_and_grad(spec2, params, x, y)
    for a, b in [(ref.loss_and_grad(spec2, params, x, y, truncate=None)[1], g0),
                 (ref.exact_loss_and_grad(spec2, params, x, y)[1], g0),
                 (ref.loss_and_grad(spec0, params, x, y, truncate=2)[1], g2),
                 (ref.loss_and_grad(spec2, params, x, y, truncate="spec")[1], g2)]:
        assert all(np.array_equal(a[key], b[key]) for key in b)
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(ValueError, match="truncate"):
            ref.loss_and_grad(spec2, params, x, y, truncate=bad)


def test_truncate_one_rnn_by_hand():
    """k = 1: every step sees h_{t-1} as a constant, so the Wh gradient is
    sum_t h_{t-1}^T dz_t with dz_t from that step's own output only."""
    spec = seq_spec([rec("rnn", 2)], "mse", "all", truncate=1)
    params = perturbed_params(spec, 11)
    x, y = ref.random_batch(spec, N, seed=12)
    _, g = ref.loss_and_grad(spec, params, x, y)
    h = my_forward(spec, params, x)
    dz = (h - y) / (N * T) * (1 - h ** 2)
    h_prev = np.concatenate([np.zeros((N, 1, 2)), h[:, :-1]], axis=1)
    assert np.allclose(g["l0.Wh"], np.einsum("nti,ntj->ij", h_prev, dz), rtol=1e-13)
    assert np.allclose(g["l0.Wx"], np.einsum("nti,ntj->ij", x, dz), rtol=1e-13)
    assert np.allclose(g["l0.b"], dz.sum(axis=(0, 1)), rtol=1e-13)


def test_fd_hessian_ignores_truncation():
    spec0 = seq_spec([rec("gru", 2), dense(2)], "mse", "last", t=4)
    spec = seq_spec([rec("gru", 2), dense(2)], "mse", "last", t=4, truncate=1)
    params = perturbed_params(spec, 13)
    x, y = ref.random_batch(spec, N, seed=14)
    h0 = ref.finite_difference_hessian(spec0, params, x, y)
    h = ref.finite_difference_hessian(spec, params, x, y)
    assert np.array_equal(h, h0)


def test_birnn_directions():
    """fwd half at t = 0 and bwd half at t = T-1 have read one step only."""
    for cell in ("rnn", "lstm", "gru"):
        spec = seq_spec([rec("birnn", 2, cell=cell)], "mse", "all")
        params = perturbed_params(spec, 15)
        x, _ = ref.random_batch(spec, N, seed=16)
        out = ref.forward(spec, params, x)
        zero = np.zeros((N, 2))
        state = (zero, zero) if cell == "lstm" else (zero,)
        act = lambda z: np.tanh(z)
        for half, t, cols in (("fwd", 0, slice(0, 2)), ("bwd", T - 1, slice(2, 4))):
            p = {k.split(".")[-1]: v for k, v in params.items() if f".{half}." in k}
            _, h = cell_step(cell, p, x[:, t], state, act)
            assert np.allclose(out[:, t, cols], h, rtol=1e-14), (cell, half)
        # the backward half is the forward cell run on the reversed sequence
        one = seq_spec([rec(cell, 2)], "mse", "all")
        pb = {f"l0.{k.split('.')[-1]}": v for k, v in params.items() if ".bwd." in k}
        assert np.allclose(out[:, :, 2:], ref.forward(one, pb, x[:, ::-1])[:, ::-1],
                           rtol=1e-14)


def test_sequence_losses_and_batches():
    spec = seq_spec([rec("rnn", 3)], "softmax_cross_entropy", "all")
    params = perturbed_params(spec, 17)
    x, y = ref.random_batch(spec, N, seed=18)
    assert x.shape == (N, T, F) and y.shape == (N, T) and y.dtype == np.int64
    out = ref.forward(spec, params, x)
    logp = out - np.log(np.exp(out).sum(axis=-1, keepdims=True))
    expect = -np.mean(np.take_along_axis(logp, y[..., None], axis=-1))   # N*T terms
    assert ref.loss(spec, params, x, y) == pytest.approx(expect, rel=1e-13)
    with pytest.raises(ValueError, match="y: expected shape"):
        ref.loss(spec, params, x, y[:, -1])

    last = seq_spec([rec("rnn", 3)], "mse", "last")
    x, y = ref.random_batch(last, N, seed=19)
    assert y.shape == (N, 3)
    out = ref.forward(last, params, x)
    assert ref.loss(last, params, x, y) == pytest.approx(
        0.5 * np.sum((out[:, -1] - y) ** 2) / N, rel=1e-13)
    g = ref.output_grad(last, out, y)
    assert np.all(g[:, :-1] == 0) and np.allclose(g[:, -1], (out[:, -1] - y) / N)
    with pytest.raises(ValueError, match="y: expected shape"):
        ref.loss(last, params, x, np.zeros((N, T, 3)))
    with pytest.raises(ValueError, match="x: expected"):
        ref.loss(last, params, x[:, :-1], y)

    bce = seq_spec([rec("gru", 2)], "sigmoid_binary_cross_entropy", "all")
    x, y = ref.random_batch(bce, N, seed=20)
    assert y.shape == (N, T, 2) and y.min() >= 0 and y.max() <= 1


def test_init_params_recurrent():
    spec = seq_spec([rec("birnn", 4, cell="lstm"), rec("gru", 2)], "mse", "all")
    p = ref.init_params(spec, seed=0)
    assert list(p) == list(spec.param_shapes)
    assert p["l0.fwd.Wx"].shape == (F, 16) and p["l0.bwd.Wh"].shape == (4, 16)
    assert p["l1.Wx"].shape == (8, 6) and p["l1.bh"].shape == (6,)
    assert np.max(np.abs(p["l0.fwd.Wx"])) <= math.sqrt(6 / (F + 16))
    assert all(np.all(v == 0) for k, v in p.items() if k.rsplit(".", 1)[-1][0] == "b")
    # l2 counts Wx and Wh of both halves, not the biases
    lam = 0.3
    spec_l2 = seq_spec([rec("birnn", 4, cell="lstm"), rec("gru", 2)], "mse", "all", l2=lam)
    q = perturbed_params(spec_l2, 1)
    w2 = sum(float(np.sum(v ** 2)) for k, v in q.items() if ".W" in k)
    assert ref.regularization(spec_l2, q) == pytest.approx(0.5 * lam * w2, rel=1e-14)
