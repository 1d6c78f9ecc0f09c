"""Train the digits CNN (examples/digits_cnn.yaml) with torch.optim.Adam
through bpgen.torch, next to the same network in plain PyTorch.

The data and split of examples/train_digits_cnn.py (scikit-learn's bundled
8x8 digits, no download).  Both runs start from the same parameters
(``init_params(seed)``), see the batches in the same order and take the same
Adam steps; the bpgen run's gradients come from the generated C module
(``bpgen.torch.module``), the plain run's from PyTorch's autograd over
``torch.nn.functional``.  It prints each run's test accuracy and time per
epoch.  The two runs do not stay identical: at a ReLU kink (a pre-activation
exactly 0, which the zero biases and the digits' blank patches give at the
start) bpgen takes the right-hand derivative, 1 (docs/architecture-file.md),
PyTorch takes 0, and Adam's normalised steps carry the difference on; the
first step's gradients agree elsewhere (the script prints where they differ).

    python examples/train_digits_torch.py [--backend c|numpy] [--epochs 20] [--seed 0]

Needs PyTorch (``pip install '.[torch]'``, tested with torch 2.13.0) and
scikit-learn (``pip install '.[examples]'``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")     # small matrices: one BLAS thread (before NumPy)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # this checkout's bpgen
import bpgen  # noqa: E402
import train_digits_cnn  # noqa: E402  (this folder is on sys.path when run)

ARCH = Path(__file__).resolve().with_name("digits_cnn.yaml")


def plain_loss(torch, p, x, y, l2):
    """digits_cnn.yaml in torch.nn.functional (PyTorch's conv2d is the same
    cross-correlation; l2 on the weights)."""
    F = torch.nn.functional
    h = F.max_pool2d(F.relu(F.conv2d(x, p["l0.W"], p["l0.b"], padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["l2.W"], p["l2.b"], padding=1)), 2)
    out = h.flatten(1) @ p["l5.W"] + p["l5.b"]
    reg = 0.5 * l2 * sum((p[k] ** 2).sum() for k in ("l0.W", "l2.W", "l5.W"))
    return F.cross_entropy(out, y) + reg, out


def run(torch, name, params, loss_of, logits_of, data, args):
    """Adam over ``params`` (a list of leaves); prints and returns the accuracy."""
    (x_train, y_train), (x_test, y_test) = data
    opt = torch.optim.Adam(params, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            opt.zero_grad()
            loss_of(x_train[idx], y_train[idx]).backward()
            opt.step()
    per_epoch = (time.perf_counter() - t0) / args.epochs
    with torch.no_grad():
        acc = float((logits_of(x_test).argmax(1) == y_test).double().mean())
    print(f"{name:<34s} test accuracy {acc:.2%}   {1e3 * per_epoch:7.1f} ms per epoch")
    return acc


def first_step_gradients(torch, mod, net, data, args):
    """The gradients of the first batch, bpgen's against PyTorch's autograd:
    equal but for the entries a ReLU kink reaches."""
    x, y = data[0][0][:args.batch_size], data[0][1][:args.batch_size]
    ours = torch.autograd.grad(net.loss(x, y), list(net.parameters()))
    plain = {k: p.detach().clone().requires_grad_() for k, p in net.params().items()}
    theirs = torch.autograd.grad(plain_loss(torch, plain, x, y, 1e-4)[0], list(plain.values()))
    z = torch.nn.functional.conv2d(x, plain["l0.W"], plain["l0.b"], padding=1)
    kinks = int((z == 0).sum())
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    print(f"first batch: {kinks} first-layer pre-activations exactly 0 (ReLU kinks); "
          f"largest gradient difference {worst:.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("train_digits_torch.py needs PyTorch: pip install '.[torch]'", file=sys.stderr)
        return 1
    import bpgen.torch as bt
    torch.set_num_threads(1)
    data = [(torch.from_numpy(x), torch.from_numpy(y))
            for x, y in train_digits_cnn.load_data()]
    with tempfile.TemporaryDirectory(prefix="bpgen-train-torch-") as out_dir:
        mod = bpgen.build(str(ARCH), backend=args.backend, out_dir=out_dir)
        print(f"{ARCH.name}: {mod.N_PARAMS} parameters, {len(data[0][0])} training and "
              f"{len(data[1][0])} test images, Adam lr {args.lr}, batch {args.batch_size}, "
              f"{args.epochs} epochs")
        net = bt.module(mod, seed=args.seed)
        first_step_gradients(torch, mod, net, data, args)
        run(torch, f"bpgen.torch.module ({args.backend})", list(net.parameters()),
            net.loss, net, data, args)
        l2 = 1e-4
        plain = {k: torch.from_numpy(v).requires_grad_()
                 for k, v in mod.init_params(args.seed).items()}
        run(torch, "plain PyTorch (autograd)", list(plain.values()),
            lambda x, y: plain_loss(torch, plain, x, y, l2)[0],
            lambda x: plain_loss(torch, plain, x, data[1][1], l2)[1], data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
