"""Train an LSTM (examples/sine_lstm.yaml) to predict the next value of a noisy sine wave.

Each sample is a window of 20 noisy readings of a sine wave with a random
frequency, amplitude and phase; the target is the wave's (noise-free) value one
step after the window.  A 16-unit LSTM (or GRU, with --cell gru) reads the
window and a dense layer maps its last state to the prediction; the loss scores
only the last step (``loss: {type: mse, steps: last}``).  The data are synthetic
(NumPy, fixed seed, no download): 2000 training and 500 test windows, the same
for every --seed.  At the end the test MSE is compared with two baselines: the
naive forecast "the next value equals the last observed one", and the best
linear forecast from the whole window (least squares on the training set).

    python examples/train_sine.py [--backend c|numpy] [--cell lstm|gru]
                                  [--epochs 20] [--seed 0] [--truncate K]

--cell and --truncate edit the loaded YAML (as a dict) before passing it to
bpgen.build: the layer type, and ``bptt: {truncate: K}`` (the gradient stops
flowing through the recurrent state every K steps).  The generated sources go
to a temporary directory that is removed when the script ends, so the committed
golden files in ``generated/`` are never touched; the compiled C extension is
still cached under ``$BPGEN_CACHE_DIR`` (default ``~/.cache/bpgen``), so a second
run does not recompile it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# The matrices here are tiny (batch 32 x 16 units): a multithreaded BLAS only
# adds overhead, several times the work on a busy machine.  One thread unless
# the caller says otherwise; must be set before NumPy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import bpgen  # noqa: E402

from train_digits import Adam  # noqa: E402  (this folder is on sys.path when run)

ARCH = Path(__file__).resolve().with_name("sine_lstm.yaml")
N_TRAIN, N_TEST = 2000, 500
NOISE = 0.1             # standard deviation of the measurement noise
DATA_SEED = 12345       # fixes the data set, independent of --seed


def make_data(n, steps, rng):
    """n windows x (n, steps, 1) of a noisy sine wave and the clean next value y (n, 1)."""
    omega = rng.uniform(0.15, 0.6, size=(n, 1))          # radians per step: periods 10..42 steps
    amp = rng.uniform(0.5, 1.0, size=(n, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, 1))
    t = np.arange(steps + 1)
    wave = amp * np.sin(omega * t + phase)                 # (n, steps + 1)
    x = wave[:, :steps] + NOISE * rng.standard_normal((n, steps))
    return np.ascontiguousarray(x[:, :, None]), np.ascontiguousarray(wave[:, steps:])


def predict(mod, params, x):
    """The prediction after each window: the output's last step, shape (N, 1)."""
    return mod.forward(params, x)[:, -1, :]       # forward gives every step: (N, T, 1)


def mse(pred, y):
    return float(np.mean((pred - y) ** 2))


def linear_forecast(x_train, y_train, x_test):
    """Least-squares linear autoregression on the whole window (plus a constant)."""
    def design(x):
        return np.column_stack([x.reshape(len(x), -1), np.ones(len(x))])
    w, *_ = np.linalg.lstsq(design(x_train), y_train, rcond=None)
    return design(x_test) @ w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c",
                    help="generated module to train with (default: c)")
    ap.add_argument("--cell", choices=("lstm", "gru"), default="lstm",
                    help="recurrent layer type (default: lstm, as in the YAML)")
    ap.add_argument("--epochs", type=int, default=20, help="default: 20")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for the initial weights and the batch order (default: 0)")
    ap.add_argument("--batch-size", type=int, default=32, help="default: 32")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam step size (default: 0.01)")
    ap.add_argument("--truncate", type=int, default=None, metavar="K",
                    help="truncated BPTT: add bptt: {truncate: K} (default: full BPTT)")
    args = ap.parse_args(argv)

    with open(ARCH) as f:
        spec = yaml.safe_load(f)
    spec["layers"][0]["type"] = args.cell
    spec["name"] = f"sine_{args.cell}"
    if args.truncate is not None:
        spec["bptt"] = {"truncate": args.truncate}
        spec["name"] += f"_tbptt{args.truncate}"
    steps = spec["input"]["steps"]

    rng = np.random.default_rng(DATA_SEED)
    x_train, y_train = make_data(N_TRAIN, steps, rng)
    x_test, y_test = make_data(N_TEST, steps, rng)

    # The generated module lives in a temporary directory (not generated/, which
    # holds committed golden files); it stays alive while the module is used.
    with tempfile.TemporaryDirectory(prefix="bpgen-train-sine-") as out_dir:
        t0 = time.perf_counter()
        try:
            mod = bpgen.build(spec, backend=args.backend, out_dir=out_dir)
        except ValueError as e:                 # e.g. --truncate 0
            print(f"train_sine.py: {e}", file=sys.stderr)
            return 2
        return train(mod, spec, args, steps, (x_train, y_train), (x_test, y_test), t0)


def train(mod, spec, args, steps, train_data, test_data, t0):
    """Train ``mod`` with Adam and print the test MSE against the baselines."""
    (x_train, y_train), (x_test, y_test) = train_data, test_data
    bptt = f", bptt truncated every {args.truncate} steps" if args.truncate else ""
    print(f"built {spec['name']} ({ARCH.name} with a {args.cell} layer{bptt}) with the "
          f"{args.backend} backend in {time.perf_counter() - t0:.1f}s: {mod.N_PARAMS} "
          f"parameters ({', '.join(f'{k} {tuple(s)}' for k, s in mod.PARAM_SHAPES.items())})")
    print(f"{len(x_train)} training and {len(x_test)} test windows of {steps} steps, "
          f"noise sd {NOISE}")

    params = mod.init_params(seed=args.seed)
    opt = Adam(params, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    report_every = max(1, args.epochs // 10)
    print("training loss = mean of 0.5 * (prediction - target)^2, i.e. half the MSE")
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
            print(f"epoch {epoch:3d}  training loss {total / seen:.5f}")
    print(f"trained in {time.perf_counter() - t0:.1f}s")

    net = mse(predict(mod, params, x_test), y_test)
    naive = mse(x_test[:, -1, :], y_test)
    linear = mse(linear_forecast(x_train, y_train, x_test), y_test)
    print(f"test MSE ({len(x_test)} windows):")
    print(f"  {args.cell:<34s}{net:.5f}")
    for label, value in (("repeat the last observed value", naive),
                         ("linear fit on the whole window", linear)):
        print(f"  {label:<34s}{value:.5f}  ({value / net:.1f}x the {args.cell}'s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
