"""Compare generated modules with PyTorch autograd (an independent AD oracle).

    pip install torch==2.13.0      # optional, not a test dependency
    python scripts/torch_oracle.py [--backend numpy|c|all]

Builds dense networks (every activation x loss x dtype), recurrent ones
(rnn, lstm, gru, birnn of each cell, stacked, truncated) and transformer ones
(token ids, embedding with and without positions, causal and full
multi-head attention, nested residual blocks with layernorm and dense at
every step; sequence and last-step losses; both dtypes) and prints the max
relative error of forward, loss, gradient and Hessian-vector product against
PyTorch (the model written here with torch tensor ops; gradients by autograd,
truncation by detaching the state between chunks, hvp by double backward of
the exact loss).  Exits 1 when one exceeds 1e-8 (float64) or 1e-4 (float32).
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bpgen  # noqa: E402
from bpgen.check import rel_err, sample_point  # noqa: E402
from bpgen.spec import ACTIVATIONS, LOSSES, load_spec  # noqa: E402

ACT = {
    "identity": lambda z, a: z, "sigmoid": lambda z, a: torch.sigmoid(z),
    "tanh": lambda z, a: torch.tanh(z), "relu": lambda z, a: F.relu(z),
    "leaky_relu": lambda z, a: F.leaky_relu(z, a), "elu": lambda z, a: F.elu(z, a),
    "softplus": lambda z, a: F.softplus(z), "silu": lambda z, a: F.silu(z),
    "gelu": lambda z, a: F.gelu(z),
}


def cell_run(layer, tp, pre, x, reverse, truncate):
    """One recurrent cell over x (N, T, F) in torch."""
    n, steps, _ = x.shape
    h_units = layer.units
    h = torch.zeros(n, h_units, dtype=x.dtype)
    c = torch.zeros(n, h_units, dtype=x.dtype)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    outs = [None] * steps
    for i, t in enumerate(order):
        if truncate and i > 0 and i % truncate == 0:
            h, c = h.detach(), c.detach()
        xt = x[:, t]
        if layer.cell == "rnn":
            h = ACT[layer.activation](xt @ tp[pre + "Wx"] + tp[pre + "b"] + h @ tp[pre + "Wh"],
                                      layer.alpha)
        elif layer.cell == "lstm":
            g = xt @ tp[pre + "Wx"] + tp[pre + "b"] + h @ tp[pre + "Wh"]
            i_, f_, g_, o_ = g.split(h_units, dim=1)
            c = torch.sigmoid(f_) * c + torch.sigmoid(i_) * torch.tanh(g_)
            h = torch.sigmoid(o_) * torch.tanh(c)
        else:
            gx = xt @ tp[pre + "Wx"] + tp[pre + "bx"]
            gh = h @ tp[pre + "Wh"] + tp[pre + "bh"]
            rx, zx, nx = gx.split(h_units, dim=1)
            rh, zh, nh = gh.split(h_units, dim=1)
            r, z = torch.sigmoid(rx + rh), torch.sigmoid(zx + zh)
            nn_ = torch.tanh(nx + r * nh)
            h = (1 - z) * nn_ + z * h
        outs[t] = h
    return torch.stack(outs, dim=1)


def attention(layer, tp, pre, h):
    """Multi-head self-attention as PyTorch's explicit composition (softmax of
    the masked scaled scores; scaled_dot_product_attention has no double
    backward)."""
    n, t, f = h.shape
    heads = layer.heads

    def split(a):
        return a.reshape(n, t, heads, f // heads).transpose(1, 2)
    q, k, v = (split(h @ tp[f"{pre}W{c}"] + tp[f"{pre}b{c}"]) for c in "qkv")
    s = q @ k.transpose(-1, -2) / (f // heads) ** 0.5
    if layer.causal:
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -torch.inf)
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(n, t, f)
    return o @ tp[f"{pre}Wo"] + tp[f"{pre}bo"]


def apply_layers(layers, tp, prefix, h, truncate):
    for layer in layers:
        name = prefix + layer.name
        if layer.type == "embedding":
            h = tp[f"{name}.E"][h]
            if layer.positions:
                h = h + tp[f"{name}.P"]
        elif layer.type == "layernorm":
            h = F.layer_norm(h, h.shape[-1:], tp[f"{name}.g"], tp[f"{name}.b"], 1e-5)
        elif layer.type == "attention":
            h = attention(layer, tp, name + ".", h)
        elif layer.type == "block":
            inner = apply_layers(layer.layers, tp, name + ".", h, truncate)
            h = inner + h if layer.residual else inner
        elif layer.type == "dense":
            h = ACT[layer.activation](h @ tp[f"{name}.W"] + tp[f"{name}.b"], layer.alpha)
        elif layer.type == "flatten":
            h = h.reshape(len(h), -1)
        elif layer.type == "birnn":
            h = torch.cat([cell_run(layer, tp, f"{name}.fwd.", h, False, truncate),
                           cell_run(layer, tp, f"{name}.bwd.", h, True, truncate)], dim=2)
        else:
            h = cell_run(layer, tp, f"{name}.", h, False, truncate)
    return h


def torch_loss(spec, tp, x, y, truncate=None):
    if spec.input.kind == "tokens":
        h = torch.tensor(np.asarray(x, dtype=np.int64))
    else:
        h = torch.tensor(np.asarray(x, dtype=np.float64))
    if spec.input.kind not in ("sequence", "tokens"):
        h = h.reshape(len(h), -1)
    out = apply_layers(spec.layers, tp, "", h, truncate)
    scored = out
    if out.dim() == 3 and spec.loss.steps == "last":
        scored = out[:, -1]
    count = scored.shape[0] * (scored.shape[1] if scored.dim() == 3 else 1)
    k = scored.shape[-1]
    flat = scored.reshape(-1, k)
    if spec.loss.type == "mse":
        loss = 0.5 * ((flat - torch.tensor(y).reshape(-1, k)) ** 2).sum() / count
    elif spec.loss.type == "softmax_cross_entropy":
        loss = F.cross_entropy(flat, torch.tensor(y).reshape(-1), reduction="sum") / count
    else:
        loss = F.binary_cross_entropy_with_logits(
            flat, torch.tensor(y, dtype=torch.float64).reshape(-1, k), reduction="sum") / count
    for key, v in tp.items():
        if key.rsplit(".", 1)[1] in ("W", "Wx", "Wh", "Wq", "Wk", "Wv", "Wo"):
            loss = loss + 0.5 * spec.l2 * (v ** 2).sum()
    return out, loss


def oracle(spec, params, x, y, v):
    tp = {k: torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
          for k, a in params.items()}
    out, loss = torch_loss(spec, tp, x, y, spec.truncate)
    grads = torch.autograd.grad(loss, list(tp.values()))
    _, exact = torch_loss(spec, tp, x, y, None)
    g = torch.autograd.grad(exact, list(tp.values()), create_graph=True)
    dot = sum((gi * torch.tensor(np.asarray(v[k], dtype=np.float64))).sum()
              for gi, k in zip(g, tp))
    hv = torch.autograd.grad(dot, list(tp.values()))
    return (out.detach().numpy(), loss.item(),
            {k: t.numpy() for k, t in zip(tp, grads)}, {k: t.numpy() for k, t in zip(tp, hv)})


def architectures():
    for dtype in ("float64", "float32"):
        for act in ACTIVATIONS:
            for loss in LOSSES:
                yield {"name": f"o_{act}_{loss[:4]}_{dtype}", "dtype": dtype,
                       "input": {"features": 4},
                       "layers": [{"type": "dense", "units": 6, "activation": act},
                                  {"type": "dense", "units": 5, "activation": act},
                                  {"type": "dense", "units": 3}],
                       "loss": loss, "regularization": {"l2": 0.01}}
    seq = {"features": 3, "steps": 5}
    cases = [
        ("rnn_tanh", [{"type": "rnn", "units": 4}]),
        ("rnn_relu", [{"type": "rnn", "units": 4, "activation": "relu"}]),
        ("rnn_softplus", [{"type": "rnn", "units": 4, "activation": "softplus"}]),
        ("lstm", [{"type": "lstm", "units": 4}]),
        ("gru", [{"type": "gru", "units": 4}]),
        ("bi_rnn", [{"type": "birnn", "units": 3, "cell": "rnn"}]),
        ("bi_lstm", [{"type": "birnn", "units": 3, "cell": "lstm"}]),
        ("bi_gru", [{"type": "birnn", "units": 3, "cell": "gru"}]),
        ("stacked", [{"type": "lstm", "units": 4, "name": "enc"}, {"type": "gru", "units": 3},
                     {"type": "dense", "units": 4, "activation": "relu"}]),
    ]
    for name, layers in cases:
        for steps, loss in (("all", "softmax_cross_entropy"), ("last", "mse"),
                            ("all", "sigmoid_binary_cross_entropy")):
            for truncate in (None, 2):
                arch = {"name": f"r_{name}_{steps}_{loss[:4]}_{truncate or 0}",
                        "input": seq, "layers": layers + [{"type": "dense", "units": 3}],
                        "loss": {"type": loss, "steps": steps},
                        "regularization": {"l2": 0.01}}
                if truncate:
                    arch["bptt"] = {"truncate": truncate}
                yield arch


    emb = {"type": "embedding", "units": 4}
    transformer = [
        ("attn_causal", [dict(emb, positions=True), {"type": "attention", "heads": 2,
                                                     "causal": True}]),
        ("attn_full", [emb, {"type": "attention", "heads": 1}]),
        ("prenorm", [dict(emb, positions=True),
                     {"type": "block", "residual": True, "layers": [
                         {"type": "layernorm"}, {"type": "attention", "heads": 2,
                                                 "causal": True}]},
                     {"type": "block", "residual": True, "layers": [
                         {"type": "layernorm"},
                         {"type": "dense", "units": 8, "activation": "gelu"},
                         {"type": "dense", "units": 4}]}]),
        ("nested", [emb, {"type": "block", "layers": [
            {"type": "block", "residual": True, "name": "inner", "layers": [
                {"type": "attention", "heads": 4}]},
            {"type": "dense", "units": 6, "activation": "tanh"}]}]),
    ]
    for dtype in ("float64", "float32"):
        for name, layers in transformer:
            for steps, loss in (("all", "softmax_cross_entropy"), ("last", "mse")):
                yield {"name": f"t_{name}_{steps}_{dtype}", "dtype": dtype,
                       "input": {"tokens": 7, "steps": 4},
                       "layers": layers + [{"type": "dense", "units": 3}],
                       "loss": {"type": loss, "steps": steps},
                       "regularization": {"l2": 0.01}}


def dict_err(got, want):
    """The worst key's rel_err; a key that is zero in exact arithmetic
    (attention's bk: softmax ignores a shift of a whole row of scores) is
    measured against the largest entry of the whole result, not its noise."""
    top = max(float(np.max(np.abs(w))) for w in want.values())
    return max(rel_err(got[k], w) if np.max(np.abs(w)) > 1e-12 * top
               else float(np.max(np.abs(got[k] - w))) / max(top, 1e-300)
               for k, w in want.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("numpy", "c", "all"), default="all")
    args = ap.parse_args(argv)
    backends = ("numpy", "c") if args.backend == "all" else (args.backend,)
    worst, bad = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in architectures():
            spec = load_spec(arch)
            tol = 1e-8 if spec.dtype == "float64" else 1e-4
            for backend in backends:
                mod = bpgen.build(arch, backend=backend, out_dir=tmp)
                params, x, y = sample_point(spec, mod, batch=4, seed=1)
                v = mod.unflatten(np.random.default_rng(2).standard_normal(mod.N_PARAMS).astype(mod.DTYPE))
                out, value, grads, hv = oracle(spec, params, x, y, v)
                got_v, got_g = mod.loss_and_grad(params, x, y)
                got_hv = mod.hvp(params, x, y, v)
                errs = {"forward": rel_err(mod.forward(params, x), out),
                        "loss": rel_err(got_v, value),
                        "grad": dict_err(got_g, grads), "hvp": dict_err(got_hv, hv)}
                e = max(errs.values())
                if spec.dtype == "float64":
                    worst = max(worst, e)
                print(f"{spec.name:42s} {backend:6s} " +
                      " ".join(f"{k} {val:.1e}" for k, val in errs.items()))
                if e > tol:
                    bad.append((spec.name, backend, e))
    print(f"worst float64 error {worst:.2e}; {len(bad)} over tolerance")
    for b in bad:
        print("  over tolerance:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
