"""JAX and PyTorch peers for benchmarks/run.py: the same loss and gradient, written by hand.

Each peer takes a bpgen architecture dict, bpgen parameters (a dict of NumPy
arrays keyed like ``PARAM_SHAPES``) and the data (x, y), and returns
``(call, read)``: ``call()`` computes the loss and the gradients (the timed
part) and ``read(call())`` turns its result into ``(loss, grads)`` like
``loss_and_grad`` returns, for checking.  The second-order peers (end of the
file) also take the key order (``PARAM_SHAPES``) and work on the flat
parameter vector of bpgen's ``flatten``: ``read`` gives the (P, P) Hessian or
the flat Hessian-vector product.

Supported architectures: ``dense`` layers on a flat input, or one ``rnn``
(tanh) or ``lstm`` layer followed by ``dense`` layers at every step, or
``conv2d``, ``maxpool2d``, ``avgpool2d`` and ``flatten`` layers on an image
input followed by ``dense`` layers; the losses ``softmax_cross_entropy``
(flat output) and ``mse`` (mean over samples, and over steps with ``steps:
all``); ``regularization: {l2: lam}`` (0.5 * lam * the squares of every
``W``, ``Wx`` and ``Wh``; not with the fused float32 LSTM); no ``bptt``.
Sequences are processed time-major, like bpgen does: x (N, T, F) -> (T, N,
F).  Images are NCHW, x (N, C, H, W), and a convolution's W is (F, C, k, k)
(OIHW), as in bpgen: both are cross-correlations, padded with zeros, and
``flatten`` is the C-order reshape of (N, C, H, W) to (N, C*H*W).  Max-pooling
ties (a window of equal values) may send the gradient to another element than
bpgen's first maximum; after a relu such a window is all zeros below the kink,
where the gradient is zero either way.

Transformers (``input: {tokens: V, steps: T}``): ``embedding``,
``attention`` (the explicit composition: PyTorch's scaled_dot_product_attention
has no double backward), ``layernorm``, ``dense`` (with gelu) and ``block``
(nested, residual) layers, batch-first; softmax cross-entropy or mse over
every step or the last (``_jax_transformer_loss``, ``_torch_transformer_loss``).

Import this module after the thread environment variables are set
(PyTorch's thread count: $BPGEN_BENCH_THREADS, default 1).
"""
import os

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
    jax.config.update("jax_enable_x64", True)
except ImportError:
    jax = None

try:
    import torch
    import torch.nn.functional as F
    # run.py's thread count (1, or --threads N), set before this import
    _THREADS = int(os.environ.get("BPGEN_BENCH_THREADS", "1"))
    torch.set_num_threads(_THREADS)
    try:
        torch.set_num_interop_threads(_THREADS)
    except RuntimeError:        # only allowed before any inter-op work started
        pass
except ImportError:
    torch = None

CE = "softmax_cross_entropy"


KINDS = ("dense", "rnn", "lstm", "conv2d", "maxpool2d", "avgpool2d", "flatten")
WEIGHTS = ("W", "Wx", "Wh")             # what l2 regularizes (not biases)


def _layers(arch):
    """[(layer name, type, activation, layer dict)] of an architecture.

    Refuses what the peers lack: bptt, unknown layer types, a non-tanh rnn."""
    if arch.get("bptt"):
        raise NotImplementedError("peers: bptt is not implemented")
    out = []
    for i, layer in enumerate(arch["layers"]):
        kind, act = layer["type"], layer.get("activation")
        if kind not in KINDS or (kind == "rnn" and act not in (None, "tanh")):
            raise NotImplementedError(f"peers: layer {layer} is not implemented")
        default = "tanh" if kind == "rnn" else "identity"
        out.append((layer.get("name", f"l{i}"), kind, act or default, layer))
    return out


def _l2(arch):
    """The l2 factor lam of ``regularization: {l2: lam}``, 0.0 without one."""
    return float((arch.get("regularization") or {}).get("l2", 0.0))


def _is_weight(key):
    return key.rsplit(".", 1)[-1] in WEIGHTS


def _window(layer):
    """(kernel or window size, stride, padding) of a conv2d or pooling layer."""
    k = layer.get("kernel", layer.get("size"))
    default = 1 if layer["type"] == "conv2d" else k
    return k, layer.get("stride", default), layer.get("padding", 0)


def _is_sequence(arch):
    return "steps" in arch["input"]


# --------------------------------------------------------------------------- JAX

def _is_transformer(arch):
    return "tokens" in arch["input"]


def _transformer(arch, ops):
    """loss_fn(P, x, y) of a token network, batch-first, from ``ops`` (the
    library's functions: take, mean, sqrt, exp, gelu, triu, where, log_softmax,
    pick: the labels' log-probabilities)."""
    lam = _l2(arch)
    steps = arch["input"]["steps"]
    acts = {"identity": lambda z: z, "tanh": ops["tanh"], "relu": ops["relu"],
            "gelu": ops["gelu"]}

    def attention(P, name, layer, h):
        n, t, f = h.shape
        heads = layer["heads"]
        d = f // heads

        def split(a):
            return a.reshape(n, t, heads, d).swapaxes(1, 2)
        q, k, v = (split(h @ P[f"{name}.W{c}"] + P[f"{name}.b{c}"]) for c in "qkv")
        s = q @ k.swapaxes(-1, -2) / d ** 0.5
        if layer.get("causal", False):
            s = ops["where"](ops["mask"](t), -np.inf, s)
        s = s - s.max(-1, keepdims=True) if ops["keepdims"] else s - s.amax(-1, keepdim=True)
        e = ops["exp"](s)
        a = e / (e.sum(-1, keepdims=True) if ops["keepdims"] else e.sum(-1, keepdim=True))
        o = (a @ v).swapaxes(1, 2).reshape(n, t, f)
        return o @ P[f"{name}.Wo"] + P[f"{name}.bo"]

    def apply(P, prefix, layers, h, x):
        for i, layer in enumerate(layers):
            name, kind = prefix + layer.get("name", f"l{i}"), layer["type"]
            if kind == "embedding":
                h = P[name + ".E"][x]
                if layer.get("positions", False):
                    h = h + P[name + ".P"]
            elif kind == "layernorm":
                mu = ops["mean"](h)
                var = ops["mean"]((h - mu) ** 2)
                h = (h - mu) / ops["sqrt"](var + 1e-5) * P[name + ".g"] + P[name + ".b"]
            elif kind == "dense":
                h = acts[layer.get("activation", "identity")](h @ P[name + ".W"]
                                                             + P[name + ".b"])
            elif kind == "attention":
                h = attention(P, name, layer, h)
            elif kind == "block":
                inner = apply(P, name + ".", layer["layers"], h, x)
                h = inner + h if layer.get("residual", False) else inner
            else:
                raise NotImplementedError(f"peers: layer {layer} is not implemented")
        return h

    loss_spec = arch["loss"] if isinstance(arch["loss"], dict) else {"type": arch["loss"]}

    def loss_fn(P, x, y):
        h = apply(P, "", arch["layers"], None, x)
        if loss_spec.get("steps", "all") == "last":
            h = h[:, steps - 1]
        if loss_spec["type"] == CE:
            loss = -ops["pick"](ops["log_softmax"](h), y).mean()
        else:
            loss = 0.5 * ((h - y) ** 2).sum(-1).mean()
        if lam:
            loss = loss + 0.5 * lam * sum((v ** 2).sum() for k, v in P.items()
                                          if k.rsplit(".", 1)[-1] in WEIGHTS + _ATTN)
        return loss
    return loss_fn


_ATTN = ("Wq", "Wk", "Wv", "Wo")


def _jax_transformer_loss(arch):
    return _transformer(arch, {
        "tanh": jnp.tanh, "relu": jax.nn.relu, "exp": jnp.exp, "sqrt": jnp.sqrt,
        "gelu": lambda z: jax.nn.gelu(z, approximate=False), "where": jnp.where,
        "mask": lambda t: jnp.triu(jnp.ones((t, t), dtype=bool), 1), "keepdims": True,
        "mean": lambda a: a.mean(-1, keepdims=True),
        "log_softmax": lambda a: jax.nn.log_softmax(a, axis=-1),
        "pick": lambda logp, y: jnp.take_along_axis(logp, y[..., None], axis=-1)})


def _torch_transformer_loss(arch):
    return _transformer(arch, {
        "tanh": torch.tanh, "relu": F.relu, "exp": torch.exp, "sqrt": torch.sqrt,
        "gelu": F.gelu, "where": lambda m, a, b: b.masked_fill(m, a),
        "mask": lambda t: torch.triu(torch.ones(t, t, dtype=torch.bool), 1),
        "keepdims": False, "mean": lambda a: a.mean(-1, keepdim=True),
        "log_softmax": lambda a: F.log_softmax(a, dim=-1),
        "pick": lambda logp, y: logp.gather(-1, y[..., None])})


def _jax_loss(arch):
    """loss_fn(P, x, y) in JAX, P a dict of arrays keyed like bpgen's parameters."""
    if _is_transformer(arch):
        return _jax_transformer_loss(arch)
    layers = _layers(arch)
    acts = {"identity": lambda z: z, "tanh": jnp.tanh, "relu": jax.nn.relu,
            "sigmoid": jax.nn.sigmoid}
    sequence = _is_sequence(arch)

    def elman(P, name, xs):
        xw = xs @ P[name + ".Wx"] + P[name + ".b"]           # every step at once
        wh = P[name + ".Wh"]

        def step(h, a):
            h = jnp.tanh(a + h @ wh)
            return h, h
        h0 = jnp.zeros(xw.shape[1:2] + wh.shape[:1], xw.dtype)
        return lax.scan(step, h0, xw)[1]

    def lstm(P, name, xs):
        xw = xs @ P[name + ".Wx"] + P[name + ".b"]
        wh = P[name + ".Wh"]

        def step(state, a):
            h, c = state
            i, f, g, o = jnp.split(a + h @ wh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        h0 = jnp.zeros(xw.shape[1:2] + wh.shape[:1], xw.dtype)
        return lax.scan(step, (h0, h0), xw)[1]

    def conv2d(P, name, layer, h):
        _, s, p = _window(layer)
        z = lax.conv_general_dilated(h, P[name + ".W"], window_strides=(s, s),
                                     padding=((p, p), (p, p)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return z + P[name + ".b"][None, :, None, None]

    def pool(kind, layer, h):
        k, s, _ = _window(layer)
        if kind == "maxpool2d":
            return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s), "VALID")
        return lax.reduce_window(h, 0.0, lax.add, (1, 1, k, k), (1, 1, s, s), "VALID") / (k * k)

    lam = _l2(arch)

    def loss_fn(P, x, y):
        h = jnp.swapaxes(x, 0, 1) if sequence else x
        for name, kind, act, layer in layers:
            if kind == "dense":
                h = acts[act](h @ P[name + ".W"] + P[name + ".b"])
            elif kind == "conv2d":
                h = acts[act](conv2d(P, name, layer, h))
            elif kind in ("maxpool2d", "avgpool2d"):
                h = pool(kind, layer, h)
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            else:
                h = (elman if kind == "rnn" else lstm)(P, name, h)
        if arch["loss"] == CE:
            logp = jax.nn.log_softmax(h, axis=-1)
            loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        else:
            if sequence:
                y = jnp.swapaxes(y, 0, 1)
            loss = 0.5 * jnp.mean(jnp.sum((h - y) ** 2, axis=-1))
        if lam:
            loss = loss + 0.5 * lam * sum(jnp.sum(v ** 2) for k, v in P.items() if _is_weight(k))
        return loss
    return loss_fn


def jax_peer(arch, params, x, y):
    """``jax.jit(jax.value_and_grad(loss))`` on the same parameters and data."""
    f = jax.jit(jax.value_and_grad(_jax_loss(arch)))
    P = {k: jnp.asarray(v) for k, v in params.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def call():
        return jax.block_until_ready(f(P, xj, yj))

    def read(result):
        loss, grads = result
        return float(loss), {k: np.asarray(g) for k, g in grads.items()}
    return call, read


# ----------------------------------------------------------------------- PyTorch

def torch_peer(arch, params, x, y):
    """PyTorch eager autograd: the loss from leaf tensors, then torch.autograd.grad."""
    if (not _is_transformer(arch) and arch["dtype"] == "float32"
            and [kind for _, kind, _, _ in _layers(arch)][:1] == ["lstm"]):
        return torch_fused_lstm_peer(arch, params, x, y)
    loss_fn = _torch_loss(arch)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    keys, leaves = list(P), list(P.values())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def call():
        loss = loss_fn(P, xt, yt)
        return loss, torch.autograd.grad(loss, leaves)

    def read(result):
        loss, grads = result
        return loss.item(), {k: g.numpy() for k, g in zip(keys, grads)}
    return call, read


def _torch_loss(arch):
    """loss_fn(P, x, y) in PyTorch, P a dict of tensors keyed like bpgen's parameters."""
    if _is_transformer(arch):
        return _torch_transformer_loss(arch)
    layers = _layers(arch)
    acts = {"identity": lambda z: z, "tanh": torch.tanh, "relu": F.relu,
            "sigmoid": torch.sigmoid}
    sequence = _is_sequence(arch)

    def recurrent(P, name, kind, xs):
        xw = xs @ P[name + ".Wx"] + P[name + ".b"]             # every step at once
        wh = P[name + ".Wh"]
        h = c = xw.new_zeros(xw.shape[1], wh.shape[0])
        hs = []
        for a in xw:
            if kind == "rnn":
                h = torch.tanh(a + h @ wh)
            else:
                i, f, g, o = (a + h @ wh).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        return torch.stack(hs)

    lam = _l2(arch)

    def loss_fn(P, xt, yt):
        h = xt.transpose(0, 1) if sequence else xt
        for name, kind, act, layer in layers:
            if kind == "dense":
                h = acts[act](h @ P[name + ".W"] + P[name + ".b"])
            elif kind == "conv2d":
                _, s, p = _window(layer)
                h = acts[act](F.conv2d(h, P[name + ".W"], P[name + ".b"], stride=s, padding=p))
            elif kind == "maxpool2d":
                h = F.max_pool2d(h, *_window(layer)[:2])
            elif kind == "avgpool2d":
                h = F.avg_pool2d(h, *_window(layer)[:2])
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            else:
                h = recurrent(P, name, kind, h)
        if arch["loss"] == CE:
            loss = F.cross_entropy(h, yt)
        else:
            target = yt.transpose(0, 1) if sequence else yt
            loss = 0.5 * ((h - target) ** 2).sum(-1).mean()
        if lam:
            loss = loss + 0.5 * lam * sum((v ** 2).sum() for k, v in P.items() if _is_weight(k))
        return loss
    return loss_fn


def torch_fused_lstm_peer(arch, params, x, y):
    """An LSTM followed by dense layers, with the fused ``torch.nn.LSTM``.

    bpgen's LSTM has one bias b (4H,) and the gate order i, f, g, o, like
    PyTorch, which computes x W_ih^T + b_ih + h W_hh^T + b_hh: so W_ih = Wx^T,
    W_hh = Wh^T, b_ih = b and b_hh = 0 (held fixed).
    """
    (name, _, _, _), *head = _layers(arch)
    if any(kind != "dense" for _, kind, _, _ in head) or arch["loss"] == CE or _l2(arch):
        raise NotImplementedError("peers: the fused LSTM takes dense layers and mse after it, "
                                  "without regularization")
    acts = {"identity": lambda z: z, "tanh": torch.tanh, "relu": F.relu}
    wx = params[name + ".Wx"]
    lstm = torch.nn.LSTM(wx.shape[0], wx.shape[1] // 4, batch_first=True,
                         dtype=getattr(torch, arch["dtype"]))
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(wx.T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(params[name + ".Wh"].T))
        lstm.bias_ih_l0.copy_(torch.from_numpy(params[name + ".b"]))
        lstm.bias_hh_l0.zero_()
    lstm.bias_hh_l0.requires_grad_(False)
    P = {k: torch.tensor(params[k], requires_grad=True)
         for n, _, _, _ in head for k in (n + ".W", n + ".b")}
    keys = [name + ".Wx", name + ".Wh", name + ".b"] + list(P)
    leaves = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0] + list(P.values())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def call():
        h = lstm(xt)[0]                                       # (N, T, H), batch-first
        for n, _, act, _ in head:
            h = acts[act](h @ P[n + ".W"] + P[n + ".b"])
        loss = 0.5 * ((h - yt) ** 2).sum(-1).mean()
        return loss, torch.autograd.grad(loss, leaves)

    def read(result):
        loss, grads = result
        grads = [g.T if k in keys[:2] else g for k, g in zip(keys, grads)]
        return loss.item(), {k: np.ascontiguousarray(g.numpy()) for k, g in zip(keys, grads)}
    return call, read


# ------------------------------------------------------------------ second order
#
# The second-order peers work on the flat parameter vector theta of bpgen's
# flatten(): the keys in ``keys`` (PARAM_SHAPES) order, each array in C order.
# ``keys`` and ``params`` give the layout; ``v`` is a dict like params.

def _layout(keys, params):
    """[(key, start, stop, shape)] of the flat order."""
    out, start = [], 0
    for k in keys:
        shape = tuple(np.shape(params[k]))
        stop = start + int(np.prod(shape, dtype=np.int64))
        out.append((k, start, stop, shape))
        start = stop
    return out


def _flat(keys, values):
    return np.concatenate([np.ravel(values[k]) for k in keys])


def _jax_flat_loss(arch, keys, params):
    """loss_fn(theta, x, y) of the flat vector, unflattened in bpgen's order."""
    loss_fn, layout = _jax_loss(arch), _layout(keys, params)

    def flat_loss(theta, x, y):
        return loss_fn({k: theta[a:b].reshape(s) for k, a, b, s in layout}, x, y)
    return flat_loss


def jax_hessian_peer(arch, keys, params, x, y):
    """``jax.jit(jax.hessian(loss))`` of the flat vector: (call, read -> (P, P) array)."""
    f = jax.jit(jax.hessian(_jax_flat_loss(arch, keys, params)))
    theta, xj, yj = jnp.asarray(_flat(keys, params)), jnp.asarray(x), jnp.asarray(y)

    def call():
        return jax.block_until_ready(f(theta, xj, yj))
    return call, np.asarray


def jax_hvp_peer(arch, keys, params, x, y, v):
    """Forward over reverse, ``jax.jvp(jax.grad(loss), (theta,), (v,))``, jitted.

    Returns (call, read -> flat (P,) array); ``call(u)`` takes another flat
    vector u instead of v (the same compiled function)."""
    loss = _jax_flat_loss(arch, keys, params)
    f = jax.jit(lambda th, u, x, y: jax.jvp(lambda t: jax.grad(loss)(t, x, y), (th,), (u,))[1])
    theta, xj, yj = jnp.asarray(_flat(keys, params)), jnp.asarray(x), jnp.asarray(y)
    vj = jnp.asarray(_flat(keys, v))

    def call(u=None):
        return jax.block_until_ready(f(theta, vj if u is None else jnp.asarray(u), xj, yj))
    return call, np.asarray


def torch_hessian_peer(arch, keys, params, x, y):
    """``torch.func.hessian`` (forward over reverse, vmapped) of the flat vector."""
    loss_fn, layout = _torch_loss(arch), _layout(keys, params)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    theta = torch.from_numpy(_flat(keys, params))

    def flat_loss(th):
        return loss_fn({k: th[a:b].view(s) for k, a, b, s in layout}, xt, yt)
    f = torch.func.hessian(flat_loss)

    def call():
        return f(theta)
    return call, lambda h: h.numpy()


def torch_hvp_peer(arch, keys, params, x, y, v):
    """Double backward: g = grad(loss, create_graph=True), then grad(g . v).

    Returns (call, read -> flat (P,) array); ``call(u)`` takes a flat u instead of v."""
    loss_fn = _torch_loss(arch)
    P = {k: torch.tensor(params[k], requires_grad=True) for k in keys}
    leaves = list(P.values())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    vs = [torch.from_numpy(np.ascontiguousarray(v[k])) for k in keys]
    layout = _layout(keys, params)

    def call(u=None):
        us = vs if u is None else [torch.from_numpy(u[a:b].reshape(s)) for _, a, b, s in layout]
        grads = torch.autograd.grad(loss_fn(P, xt, yt), leaves, create_graph=True)
        dot = sum((g * w).sum() for g, w in zip(grads, us))
        return torch.autograd.grad(dot, leaves)

    def read(result):
        return np.concatenate([h.detach().numpy().ravel() for h in result])
    return call, read


def jax_hmp_peer(arch, keys, params, x, y, V):
    """k Hessian-vector products at once: forward over reverse vmapped over
    the columns of V (P, k), jitted: (call, read -> (P, k) array)."""
    loss = _jax_flat_loss(arch, keys, params)

    def hvp(th, u, x, y):
        return jax.jvp(lambda t: jax.grad(loss)(t, x, y), (th,), (u,))[1]
    f = jax.jit(jax.vmap(hvp, in_axes=(None, 1, None, None), out_axes=1))
    theta, xj, yj = jnp.asarray(_flat(keys, params)), jnp.asarray(x), jnp.asarray(y)
    Vj = jnp.asarray(V)

    def call():
        return jax.block_until_ready(f(theta, Vj, xj, yj))
    return call, np.asarray


def torch_hmp_peer(arch, keys, params, x, y, V):
    """k Hessian-vector products at once: ``torch.func.jvp`` of
    ``torch.func.grad`` vmapped over the columns of V: (call, read -> (P, k))."""
    loss_fn, layout = _torch_loss(arch), _layout(keys, params)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    theta = torch.from_numpy(_flat(keys, params))
    Vt = torch.from_numpy(np.ascontiguousarray(V.T))

    def flat_loss(th):
        return loss_fn({k: th[a:b].view(s) for k, a, b, s in layout}, xt, yt)
    grad = torch.func.grad(flat_loss)
    f = torch.func.vmap(lambda u: torch.func.jvp(grad, (theta,), (u,))[1])

    def call():
        return f(Vt)
    return call, lambda h: h.numpy().T
