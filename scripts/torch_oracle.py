"""Compare generated modules with PyTorch autograd (an independent AD oracle).

    pip install torch==2.13.0      # optional, not a test dependency
    python scripts/torch_oracle.py [--backend numpy|c|all]

Builds every activation x loss x dtype combination of a small dense network
and prints the max relative error of forward, loss and gradient against
PyTorch; exits 1 when one exceeds 1e-8 (float64) or 1e-4 (float32).
"""
import argparse
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

import bpgen
from bpgen.check import rel_err, sample_point
from bpgen.spec import ACTIVATIONS, LOSSES, load_spec

ACT = {
    "identity": lambda z, a: z, "sigmoid": lambda z, a: torch.sigmoid(z),
    "tanh": lambda z, a: torch.tanh(z), "relu": lambda z, a: F.relu(z),
    "leaky_relu": lambda z, a: F.leaky_relu(z, a), "elu": lambda z, a: F.elu(z, a),
    "softplus": lambda z, a: F.softplus(z), "silu": lambda z, a: F.silu(z),
    "gelu": lambda z, a: F.gelu(z),
}


def torch_loss(spec, params, x, y):
    tp = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
          for k, v in params.items()}
    h = torch.tensor(np.asarray(x, dtype=np.float64)).reshape(len(x), -1)
    for layer in spec.layers:
        if layer.type == "dense":
            h = ACT[layer.activation](h @ tp[f"{layer.name}.W"] + tp[f"{layer.name}.b"],
                                      layer.alpha)
    out = h
    if spec.loss.type == "mse":
        loss = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / len(x)
    elif spec.loss.type == "softmax_cross_entropy":
        loss = F.cross_entropy(out, torch.tensor(y), reduction="sum") / len(x)
    else:
        loss = F.binary_cross_entropy_with_logits(out, torch.tensor(y, dtype=torch.float64),
                                                  reduction="sum") / len(x)
    for k, v in tp.items():
        if k.rsplit(".", 1)[1] in ("W", "Wx", "Wh"):
            loss = loss + 0.5 * spec.l2 * (v ** 2).sum()
    loss.backward()
    return out.detach().numpy(), loss.item(), {k: v.grad.numpy() for k, v in tp.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("numpy", "c", "all"), default="all")
    args = ap.parse_args(argv)
    backends = ("numpy", "c") if args.backend == "all" else (args.backend,)
    worst = 0.0
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float64", "float32"):
            tol = 1e-8 if dtype == "float64" else 1e-4
            for act in ACTIVATIONS:
                for loss in LOSSES:
                    arch = {"name": f"o_{act}_{loss[:4]}_{dtype}", "dtype": dtype,
                            "input": {"features": 4},
                            "layers": [{"type": "dense", "units": 6, "activation": act},
                                       {"type": "dense", "units": 5, "activation": act},
                                       {"type": "dense", "units": 3}],
                            "loss": loss, "regularization": {"l2": 0.01}}
                    spec = load_spec(arch)
                    for backend in backends:
                        mod = bpgen.build(arch, backend=backend, out_dir=tmp)
                        params, x, y = sample_point(spec, mod, batch=7, seed=1)
                        out, value, grads = torch_loss(spec, params, x, y)
                        v, g = mod.loss_and_grad(params, x, y)
                        errs = [rel_err(mod.forward(params, x), out), rel_err(v, value)]
                        errs += [rel_err(g[k], grads[k]) for k in g]
                        e = max(errs)
                        worst = max(worst, e) if dtype == "float64" else worst
                        print(f"{dtype:8s} {act:11s} {loss:30s} {backend:6s} max rel err {e:.2e}")
                        if e > tol:
                            bad.append((dtype, act, loss, backend, e))
    print(f"worst float64 error {worst:.2e}; {len(bad)} over tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
