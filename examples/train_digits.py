"""Train the digits MLP (examples/digits_mlp.yaml) with a bpgen-generated module.

Uses scikit-learn's bundled 8x8 digits (1797 images, no download): a fixed
random 360 of them are the test set (the same for every --seed), the rest train
a 64-32-10 tanh MLP with Adam.

    python examples/train_digits.py [--backend c|numpy] [--epochs 30] [--seed 0]

The generated sources go to a temporary directory that is removed when the
script ends, so the committed golden files in ``generated/`` are never touched;
the compiled C extension is still cached under ``$BPGEN_CACHE_DIR`` (default
``~/.cache/bpgen``), so a second run does not recompile it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bpgen

ARCH = Path(__file__).resolve().with_name("digits_mlp.yaml")
N_TEST = 360
SPLIT_SEED = 12345      # fixes the train/test split, independent of --seed


def load_data():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("train_digits.py needs scikit-learn: pip install '.[examples]'",
              file=sys.stderr)
        sys.exit(1)
    digits = load_digits()
    x = np.ascontiguousarray(digits.data / 16.0, dtype=np.float64)   # pixels 0..16
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test, train = order[:N_TEST], order[N_TEST:]
    return (x[train], y[train]), (x[test], y[test])


class Adam:
    """Adam over a dict of NumPy arrays, updating them in place."""

    def __init__(self, params, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1.0 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1.0 - self.beta2) * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def accuracy(mod, params, x, y):
    return float(np.mean(np.argmax(mod.forward(params, x), axis=1) == y))


def main(argv=None, arch=ARCH, load=None, epochs=30, doc=None):
    """Build ``arch``, train it on ``load()``'s split and print the test
    accuracy (train_digits_cnn.py reuses this with its own network)."""
    ap = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c",
                    help="generated module to train with (default: c)")
    ap.add_argument("--epochs", type=int, default=epochs, help=f"default: {epochs}")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for the initial weights and the batch order (default: 0)")
    ap.add_argument("--batch-size", type=int, default=32, help="default: 32")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam step size (default: 0.01)")
    args = ap.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = (load or load_data)()

    # The generated module lives in a temporary directory (not generated/, which
    # holds committed golden files); it stays alive while the module is used.
    with tempfile.TemporaryDirectory(prefix="bpgen-train-digits-") as out_dir:
        t0 = time.perf_counter()
        mod = bpgen.build(str(arch), backend=args.backend, out_dir=out_dir)
        return train(mod, args, (x_train, y_train), (x_test, y_test), t0, arch)


def train(mod, args, train_data, test_data, t0, arch=ARCH):
    """Train ``mod`` with Adam and print the test accuracy and training time."""
    (x_train, y_train), (x_test, y_test) = train_data, test_data
    print(f"built {Path(arch).name} with the {args.backend} backend in "
          f"{time.perf_counter() - t0:.1f}s: {mod.N_PARAMS} parameters "
          f"({', '.join(f'{k} {tuple(s)}' for k, s in mod.PARAM_SHAPES.items())})")
    print(f"{len(x_train)} training and {len(x_test)} test images of "
          f"{'x'.join(map(str, x_train.shape[1:]))}")

    params = mod.init_params(seed=args.seed)
    opt = Adam(params, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    report_every = max(1, args.epochs // 10)
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            loss, grads = mod.loss_and_grad(params, x_train[idx], y_train[idx])
            opt.step(params, grads)
            total += loss * len(idx)
            seen += len(idx)
        if epoch % report_every == 0 or epoch in (1, args.epochs):
            print(f"epoch {epoch:3d}  training loss {total / seen:.4f}  "
                  f"train accuracy {accuracy(mod, params, x_train, y_train):.1%}")
    print(f"trained in {time.perf_counter() - t0:.1f}s")
    print(f"test accuracy: {accuracy(mod, params, x_test, y_test):.2%} "
          f"({len(x_test)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
