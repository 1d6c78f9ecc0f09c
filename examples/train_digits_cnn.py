"""Train the digits CNN (examples/digits_cnn.yaml) with a bpgen-generated module.

The same data as examples/train_digits.py: scikit-learn's bundled 8x8 digits
(1797 images, no download), the same fixed random 360 of them as the test set
(the same for every --seed), the rest for training, and the same Adam.  Here
each image stays an image, x of shape (N, 1, 8, 8), and the network is
conv 3x3 (8 filters, relu) -> max-pool 2x2 -> conv 3x3 (16 filters, relu) ->
max-pool 2x2 -> flatten -> dense 10, both convolutions padded by 1.

    python examples/train_digits_cnn.py [--backend c|numpy] [--epochs 20] [--seed 0]

The generated sources go to a temporary directory that is removed when the
script ends, so the committed golden files in ``generated/`` are never touched;
the compiled C extension is still cached under ``$BPGEN_CACHE_DIR`` (default
``~/.cache/bpgen``), so a second run does not recompile it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# The matrices here are small (batch 32 x 64 pixels x 8 filters): a multithreaded
# BLAS only adds overhead.  One thread unless the caller says otherwise; must be
# set before NumPy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import bpgen  # noqa: E402

import train_digits  # noqa: E402  (this folder is on sys.path when run)
from train_digits import Adam, accuracy  # noqa: E402

ARCH = Path(__file__).resolve().with_name("digits_cnn.yaml")


def load_data():
    """train_digits.py's split, each image as (1, 8, 8): x (N, 1, 8, 8), labels (N,)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("train_digits_cnn.py needs scikit-learn: pip install '.[examples]'",
              file=sys.stderr)
        sys.exit(1)
    return [(np.ascontiguousarray(x.reshape(-1, 1, 8, 8)), y)
            for x, y in train_digits.load_data()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c",
                    help="generated module to train with (default: c)")
    ap.add_argument("--epochs", type=int, default=20, help="default: 20")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for the initial weights and the batch order (default: 0)")
    ap.add_argument("--batch-size", type=int, default=32, help="default: 32")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam step size (default: 0.01)")
    args = ap.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data()

    # The generated module lives in a temporary directory (not generated/, which
    # holds committed golden files); it stays alive while the module is used.
    with tempfile.TemporaryDirectory(prefix="bpgen-train-digits-cnn-") as out_dir:
        t0 = time.perf_counter()
        mod = bpgen.build(str(ARCH), backend=args.backend, out_dir=out_dir)
        return train(mod, args, (x_train, y_train), (x_test, y_test), t0)


def train(mod, args, train_data, test_data, t0):
    """Train ``mod`` with Adam and print the test accuracy and the training time."""
    (x_train, y_train), (x_test, y_test) = train_data, test_data
    print(f"built {ARCH.name} with the {args.backend} backend in "
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
