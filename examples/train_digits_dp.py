"""Differentially private training (DP-SGD) of the digits MLP (or, with --cnn, the digits CNN).

The data and the split are examples/train_digits.py's (scikit-learn's bundled
8x8 digits, a fixed 360 of them for testing).  Each step samples a batch
(Poisson sampling: every training image independently with probability
q = batch-size / n), computes the clipped gradient in one forward and one
backward pass with the module's ``clipped_grad`` (each sample's gradient
scaled to norm at most --max-norm; no per-sample gradient is formed where
the factor form is cheaper), adds Gaussian noise of standard deviation
noise-multiplier * max-norm to the sum, divides by the expected batch size,
adds the l2 term (data-independent: no privacy cost) and takes an Adam step
(post-processing).  The privacy spent, (epsilon, delta), is computed by the
RDP accountant of Google's ``dp-accounting`` (pip install '.[dp]'; without
it the script trains and says so).  Then the same network is trained
without privacy (plain loss_and_grad and Adam, the same batch size and
epochs) for comparison: test accuracy and time per epoch of both.

    python examples/train_digits_dp.py [--cnn] [--backend c|numpy] [--epochs 30]
        [--max-norm 1.0] [--noise-multiplier 1.1] [--delta 1e-5] [--seed 0]
        [--no-baseline]

The generated sources go to a temporary directory, as in train_digits.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")     # small matrices: one BLAS thread

import numpy as np  # noqa: E402

import bpgen  # noqa: E402
import train_digits  # noqa: E402  (this folder is on sys.path when run)
import train_digits_cnn  # noqa: E402
from bpgen.spec import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent


def epsilon(q, noise_multiplier, steps, delta):
    """The epsilon of ``steps`` Poisson-sampled Gaussian mechanisms (RDP
    accountant of dp-accounting), or None when dp-accounting is missing."""
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError:
        return None
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def l2_grad(spec, params):
    """The regulariser's gradient (0 outside the weights): no data, no privacy cost."""
    return {k: (spec.l2 * params[k] if spec.l2 and k in spec.l2_keys else 0.0)
            for k in params}


def train_private(mod, spec, args, train, test):
    x, y = train
    n = len(x)
    q = args.batch_size / n
    steps_per_epoch = int(round(1 / q))
    rng = np.random.default_rng(args.seed)
    params = mod.init_params(seed=args.seed)
    opt = train_digits.Adam(params, lr=args.lr)
    clipped_share = []
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for _ in range(steps_per_epoch):
            idx = np.flatnonzero(rng.random(n) < q)        # Poisson sampling
            total = {k: np.zeros(s) for k, s in mod.PARAM_SHAPES.items()}
            if len(idx):
                _, grads, norms = mod.clipped_grad(params, x[idx], y[idx], args.max_norm)
                clipped_share.append(float(np.mean(norms > args.max_norm)))
                total = {k: g * len(idx) for k, g in grads.items()}    # the clipped sum
            reg = l2_grad(spec, params)
            noisy = {k: (total[k] + rng.normal(0.0, args.noise_multiplier * args.max_norm,
                                               total[k].shape)) / args.batch_size + reg[k]
                     for k in total}
            opt.step(params, noisy)
        if epoch % max(1, args.epochs // 5) == 0 or epoch in (1, args.epochs):
            print(f"  DP epoch {epoch:3d}  train accuracy "
                  f"{train_digits.accuracy(mod, params, x, y):.1%}  clipped samples "
                  f"{np.mean(clipped_share[-steps_per_epoch:]):.0%}")
    seconds = time.perf_counter() - t0
    return params, seconds / args.epochs, steps_per_epoch * args.epochs, q


def train_plain(mod, args, train):
    x, y = train
    rng = np.random.default_rng(args.seed)
    params = mod.init_params(seed=args.seed)
    opt = train_digits.Adam(params, lr=args.lr)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            _, grads = mod.loss_and_grad(params, x[idx], y[idx])
            opt.step(params, grads)
    return params, (time.perf_counter() - t0) / args.epochs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnn", action="store_true", help="the digits CNN instead of the MLP")
    ap.add_argument("--backend", choices=("c", "numpy"), default="c")
    ap.add_argument("--epochs", type=int, default=30, help="default: 30")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="expected batch size q*n (default: 64)")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam step size (default: 0.01)")
    ap.add_argument("--max-norm", type=float, default=1.0,
                    help="per-sample clipping bound (default: 1.0)")
    ap.add_argument("--noise-multiplier", type=float, default=1.1,
                    help="noise std / max-norm (default: 1.1)")
    ap.add_argument("--delta", type=float, default=1e-5, help="default: 1e-5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the non-private run")
    args = ap.parse_args(argv)
    if not (args.max_norm > 0 and args.noise_multiplier > 0 and 0 < args.delta < 1):
        ap.error("--max-norm and --noise-multiplier must be positive, --delta in (0, 1)")
    name = "digits_cnn.yaml" if args.cnn else "digits_mlp.yaml"
    train, test = (train_digits_cnn.load_data() if args.cnn else train_digits.load_data())
    spec = load_spec(str(HERE / name))
    with tempfile.TemporaryDirectory(prefix="bpgen-train-dp-") as out_dir:
        mod = bpgen.build(str(HERE / name), backend=args.backend, out_dir=out_dir)
        print(f"{name} ({args.backend}): {mod.N_PARAMS} parameters; {len(train[0])} training "
              f"and {len(test[0])} test images")
        print(f"DP-SGD: batch {args.batch_size} (Poisson), clip {args.max_norm}, noise "
              f"multiplier {args.noise_multiplier}, {args.epochs} epochs")
        params, dp_epoch, steps, q = train_private(mod, spec, args, train, test)
        acc = train_digits.accuracy(mod, params, *test)
        eps = epsilon(q, args.noise_multiplier, steps, args.delta)
        spent = (f"(epsilon, delta) = ({eps:.2f}, {args.delta:g}) after {steps} steps "
                 f"(RDP accountant, dp-accounting)" if eps is not None else
                 "epsilon not computed: pip install '.[dp]' (dp-accounting)")
        print(f"private:     test accuracy {acc:.2%}, {dp_epoch:.3f} s per epoch; {spent}")
        if not args.no_baseline:
            params, plain_epoch = train_plain(mod, args, train)
            acc0 = train_digits.accuracy(mod, params, *test)
            print(f"non-private: test accuracy {acc0:.2%}, {plain_epoch:.3f} s per epoch "
                  f"(private / non-private time: {dp_epoch / plain_epoch:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
