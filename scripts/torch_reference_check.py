"""Compare the NumPy reference's recurrent layers with PyTorch (a one-off check).

    pip install torch==2.13.0      # optional, not a test dependency
    python scripts/torch_reference_check.py

Maps the reference's parameters onto torch.nn.RNN / LSTM / GRU (bidirectional
for birnn): weight_ih_l0 = Wx.T, weight_hh_l0 = Wh.T; rnn and lstm put b in
bias_ih_l0 with bias_hh_l0 = 0; gru has bias_ih_l0 = bx, bias_hh_l0 = bh; the
gate orders (i, f, g, o and r, z, n) are the same.  Truncated BPTT is done the
PyTorch way: the layer runs chunk by chunk of k steps with the state detached
between chunks (a birnn as two unidirectional modules, the backward one on the
flipped sequence, so its chunks count from the last step).

Prints the max relative error (max|a - b| / max(1, max|b|)) of the network
output, the loss and the gradient for every case; exits 1 if one exceeds 1e-10.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as Fn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bpgen import reference as ref
from bpgen.spec import validate

TOL = 1e-10
N, T, F = 3, 6, 3


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def make_module(cell, fan_in, units, act, p, bidirectional=False):
    """A float64 torch module holding p's weights (p: {'fwd': {...}, 'bwd': {...}})."""
    kw = dict(batch_first=True, bidirectional=bidirectional)
    if cell == "rnn":
        mod = torch.nn.RNN(fan_in, units, nonlinearity=act, **kw)
    elif cell == "lstm":
        mod = torch.nn.LSTM(fan_in, units, **kw)
    else:
        mod = torch.nn.GRU(fan_in, units, **kw)
    mod = mod.double()
    dirs = [("", p["fwd"])] + ([("_reverse", p["bwd"])] if bidirectional else [])
    with torch.no_grad():
        for suffix, q in dirs:
            getattr(mod, f"weight_ih_l0{suffix}").copy_(torch.tensor(q["Wx"].T))
            getattr(mod, f"weight_hh_l0{suffix}").copy_(torch.tensor(q["Wh"].T))
            if cell == "gru":
                getattr(mod, f"bias_ih_l0{suffix}").copy_(torch.tensor(q["bx"]))
                getattr(mod, f"bias_hh_l0{suffix}").copy_(torch.tensor(q["bh"]))
            else:
                getattr(mod, f"bias_ih_l0{suffix}").copy_(torch.tensor(q["b"]))
                getattr(mod, f"bias_hh_l0{suffix}").zero_()
    return mod


def module_grads(cell, mod, suffix=""):
    g = {"Wx": getattr(mod, f"weight_ih_l0{suffix}").grad.numpy().T,
         "Wh": getattr(mod, f"weight_hh_l0{suffix}").grad.numpy().T}
    if cell == "gru":
        g["bx"] = getattr(mod, f"bias_ih_l0{suffix}").grad.numpy()
        g["bh"] = getattr(mod, f"bias_hh_l0{suffix}").grad.numpy()
    else:
        g["b"] = getattr(mod, f"bias_ih_l0{suffix}").grad.numpy()
    return g


def run(mod, x, k):
    """The module over x, state detached between chunks of k steps (k=None: whole)."""
    if k is None:
        return mod(x)[0]
    state, outs = None, []
    for s in range(0, x.shape[1], k):
        o, state = mod(x[:, s:s + k], state)
        state = tuple(v.detach() for v in state) if isinstance(state, tuple) \
            else state.detach()
        outs.append(o)
    return torch.cat(outs, dim=1)


def torch_loss_and_grad(spec, params, x, y, k):
    a = torch.tensor(np.asarray(x, dtype=np.float64))
    leaves = {}                                   # key -> torch tensor (dense params)
    finishers = []                                # callables filling grads afterwards
    for layer in spec.layers:
        name = layer.name
        if layer.type == "dense":
            W = torch.tensor(params[f"{name}.W"], requires_grad=True)
            b = torch.tensor(params[f"{name}.b"], requires_grad=True)
            leaves[f"{name}.W"], leaves[f"{name}.b"] = W, b
            z = a @ W + b
            a = {"identity": z, "tanh": torch.tanh(z)}[layer.activation]
            continue
        cell = layer.cell or layer.type
        units = layer.units
        fan_in = layer.in_shape[-1]
        if layer.type == "birnn":
            p = {d: {kk.split(".")[-1]: v for kk, v in params.items()
                     if kk.startswith(f"{name}.{d}.")} for d in ("fwd", "bwd")}
            if k is None:                         # torch's own bidirectional module
                mod = make_module(cell, fan_in, units, layer.activation, p, True)
                a = run(mod, a, None)
                finishers.append(lambda m=mod, c=cell, n=name: {
                    **{f"{n}.fwd.{kk}": v for kk, v in module_grads(c, m).items()},
                    **{f"{n}.bwd.{kk}": v
                       for kk, v in module_grads(c, m, "_reverse").items()}})
            else:
                mf = make_module(cell, fan_in, units, layer.activation, {"fwd": p["fwd"]})
                mb = make_module(cell, fan_in, units, layer.activation, {"fwd": p["bwd"]})
                hf = run(mf, a, k)
                hb = torch.flip(run(mb, torch.flip(a, [1]), k), [1])
                a = torch.cat([hf, hb], dim=2)
                finishers.append(lambda f_=mf, b_=mb, c=cell, n=name: {
                    **{f"{n}.fwd.{kk}": v for kk, v in module_grads(c, f_).items()},
                    **{f"{n}.bwd.{kk}": v for kk, v in module_grads(c, b_).items()}})
        else:
            p = {"fwd": {kk.split(".")[-1]: v for kk, v in params.items()
                         if kk.startswith(f"{name}.")}}
            mod = make_module(cell, fan_in, units, layer.activation, p)
            a = run(mod, a, k)
            finishers.append(lambda m=mod, c=cell, n=name: {
                f"{n}.{kk}": v for kk, v in module_grads(c, m).items()})
    out = a
    sel = out[:, -1] if spec.loss.steps == "last" else out
    kdim = sel.shape[-1]
    count = sel.numel() // kdim
    flat = sel.reshape(-1, kdim)
    if spec.loss.type == "mse":
        loss = 0.5 * ((flat - torch.tensor(y).reshape(-1, kdim)) ** 2).sum() / count
    elif spec.loss.type == "softmax_cross_entropy":
        loss = Fn.cross_entropy(flat, torch.tensor(y).reshape(-1), reduction="sum") / count
    else:
        loss = Fn.binary_cross_entropy_with_logits(
            flat, torch.tensor(y).reshape(-1, kdim), reduction="sum") / count
    loss.backward()
    grads = {kk: v.grad.numpy() for kk, v in leaves.items()}
    for fin in finishers:
        grads.update(fin())
    return out.detach().numpy(), loss.item(), grads


def rec(kind, units, **kw):
    return {"type": kind, "units": units, **kw}


CASES = [
    ("rnn tanh", [rec("rnn", 4)], "mse", "all"),
    ("rnn relu", [rec("rnn", 4, activation="relu"), {"type": "dense", "units": 3}],
     "softmax_cross_entropy", "last"),
    ("lstm", [rec("lstm", 4), {"type": "dense", "units": 3}], "softmax_cross_entropy",
     "all"),
    ("lstm last", [rec("lstm", 3)], "sigmoid_binary_cross_entropy", "last"),
    ("gru", [rec("gru", 4), {"type": "dense", "units": 2}],
     "sigmoid_binary_cross_entropy", "all"),
    ("gru last", [rec("gru", 3)], "mse", "last"),
    ("birnn rnn", [rec("birnn", 3, cell="rnn"), {"type": "dense", "units": 2}], "mse",
     "all"),
    ("birnn rnn relu", [rec("birnn", 3, cell="rnn", activation="relu")],
     "softmax_cross_entropy", "last"),
    ("birnn lstm", [rec("birnn", 3, cell="lstm"), {"type": "dense", "units": 3}],
     "softmax_cross_entropy", "all"),
    ("birnn gru", [rec("birnn", 3, cell="gru")], "sigmoid_binary_cross_entropy", "last"),
    ("lstm>gru>dense", [rec("lstm", 3), rec("gru", 4), {"type": "dense", "units": 3}],
     "softmax_cross_entropy", "all"),
    ("gru>birnn lstm>dense", [rec("gru", 3), rec("birnn", 2, cell="lstm"),
                              {"type": "dense", "units": 2, "activation": "tanh"},
                              {"type": "dense", "units": 2}], "mse", "last"),
]


def main():
    worst = 0.0
    print(f"N={N} T={T} F={F}; max relative error vs torch {torch.__version__}")
    print(f"{'case':24s} {'loss':28s} {'steps':5s} {'trunc':5s} "
          f"{'output':>9s} {'loss':>9s} {'grad':>9s}")
    for i, (label, layers, loss, steps) in enumerate(CASES):
        for k in (None, 1, 2, 4):
            d = {"name": "chk", "input": {"features": F, "steps": T}, "layers": layers,
                 "loss": {"type": loss, "steps": steps}}
            if k is not None:
                d["bptt"] = {"truncate": k}
            spec = validate(d, experimental=True)
            rng = np.random.default_rng(100 + i)
            params = {kk: v + 0.3 * rng.standard_normal(v.shape)
                      for kk, v in ref.init_params(spec, seed=i).items()}
            x, y = ref.random_batch(spec, N, seed=i)
            out_r = ref.forward(spec, params, x)
            value_r, grads_r = ref.loss_and_grad(spec, params, x, y)
            out_t, value_t, grads_t = torch_loss_and_grad(spec, params, x, y, k)
            e_out = rel_err(out_r, out_t)
            e_loss = abs(value_r - value_t) / max(1.0, abs(value_t))
            assert set(grads_t) == set(grads_r)
            e_grad = max(rel_err(grads_r[kk], grads_t[kk]) for kk in grads_r)
            worst = max(worst, e_out, e_loss, e_grad)
            print(f"{label:24s} {loss:28s} {steps:5s} {str(k):5s} "
                  f"{e_out:9.1e} {e_loss:9.1e} {e_grad:9.1e}")
    print(f"worst: {worst:.2e} (tolerance {TOL:g})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
