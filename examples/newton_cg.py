"""Hessian-free Newton-CG against plain gradient descent, with bpgen's exact
curvature products, and the Hessian spectrum of the trained network.

The problem is full-batch training of the digits MLP (examples/digits_mlp.yaml:
64-32-10 tanh, softmax cross-entropy, l2 1e-4; 2410 parameters) on a fixed
subset of scikit-learn's bundled 8x8 digits (no download), or, with
``--problem sine``, a small regression MLP defined below as a dict (no
scikit-learn needed).

* Newton-CG (Martens 2010, "Deep learning via Hessian-free optimization"):
  each outer iteration solves (G + lambda I) d = -g approximately by
  conjugate gradients, where G v is ``ggn_vp`` (the Gauss-Newton matrix,
  positive semi-definite) or, with ``--curvature hessian``, ``hvp`` (the
  exact Hessian; CG stops at negative curvature).  CG is warm-started from
  the previous direction and stopped by Martens' relative-progress test;
  lambda follows the Levenberg-Marquardt rule on the reduction ratio, and a
  backtracking (Armijo) line search guards the step.  G is never formed.
* Gradient descent: theta -= eta * g, with eta tuned over a grid (the one
  reaching the target in the fewest iterations wins).

Both start from the same init_params(seed) and run until the training loss
is at most --target.  Newton-CG needs far fewer (outer) iterations; each
costs one gradient plus a few tens of curvature products, so the printed
counts of gradient and curvature evaluations and wall-clock times give the
honest comparison as well.

Finally the full spectrum of the exact Hessian at the Newton-CG solution
(``bpgen.spectrum(..., full=True)``: ``hessian`` assembled from hvp columns
and ``numpy.linalg.eigvalsh``) is printed and, with --png FILE, plotted.

With ``--data`` the data set is read from disk and every loss, gradient
and curvature product is a full-dataset one on Dask (bpgen.distributed,
docs/distributed.md): a Zarr store (``bpgen.distributed.save_dataset`` or
any group with arrays x, y), an .npz with x and y, or ``X.npy`` with
``--targets Y.npy`` (read by memory map on the workers).  The cluster is
``--scheduler ADDRESS``, or an embedded LocalCluster of ``--workers``
processes (default 2).  The network is the problem's (``--problem``) or
``--arch FILE.yaml``.  Newton-CG runs as above (on the same data it takes the
same steps as the in-memory run, to rounding); gradient descent's grid of
thousands of full passes is left out, and the spectrum at the solution is
``bpgen.distributed.spectrum`` (the full eigendecomposition up to 1500
parameters, Lanczos above).

    python examples/newton_cg.py [--backend c|numpy] [--problem digits|sine]
        [--curvature ggn|hessian] [--target 0.02] [--png spectrum.png]
        [--max-outer N] [--save-params FILE.npz]
    python examples/newton_cg.py --data big.zarr|data.npz|x.npy [--targets y.npy]
        [--scheduler ADDRESS | --workers 2] [--chunk C] [--arch FILE.yaml] ...

Files are written only where --png and --save-params say (an existing
--save-params file is refused); the modules are built in a temporary
directory (in-memory) or in bpgen.distributed's cache ($BPGEN_CACHE_DIR).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bpgen

DIGITS_ARCH = Path(__file__).resolve().with_name("digits_mlp.yaml")
SINE_ARCH = {               # a small regression MLP: y = sin(3 x1) cos(2 x2)
    "name": "newton_sine_mlp",
    "input": {"features": 2},
    "layers": [{"type": "dense", "units": 16, "activation": "tanh"},
               {"type": "dense", "units": 16, "activation": "tanh"},
               {"type": "dense", "units": 1}],
    "loss": "mse",
}
DEFAULT_TARGET = {"digits": 0.02, "sine": 0.01}
GD_STEPS = {"digits": (0.25, 0.5, 1.0, 1.5, 2.0), "sine": (0.1, 0.2, 0.5, 0.75, 1.0)}
SPLIT_SEED = 12345


# --------------------------------------------------------------------------
# data

def load_problem(name: str, n: int):
    if name == "sine":
        rng = np.random.default_rng(0)
        x = rng.uniform(-1.0, 1.0, size=(n, 2))
        y = (np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1]))[:, None]
        return SINE_ARCH, x, y
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("newton_cg.py --problem digits needs scikit-learn (pip install "
              "'.[examples]'); --problem sine does not", file=sys.stderr)
        sys.exit(1)
    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.data))[:n]
    x = np.ascontiguousarray(digits.data[order] / 16.0)
    return str(DIGITS_ARCH), x, digits.target[order].astype(np.int64)


# --------------------------------------------------------------------------
# optimisers over the flat parameter vector

class Problem:
    """Flat-vector views of a generated module's functions, with counters."""

    def __init__(self, mod, x, y, curvature: str):
        self.mod, self.x, self.y = mod, x, y
        self.curv = mod.ggn_vp if curvature == "ggn" else mod.hvp
        self.n_grad = self.n_loss = self.n_curv = 0

    def loss(self, theta) -> float:
        self.n_loss += 1
        return self.mod.loss(self.mod.unflatten(theta), self.x, self.y)

    def loss_and_grad(self, theta):
        self.n_grad += 1
        value, g = self.mod.loss_and_grad(self.mod.unflatten(theta), self.x, self.y)
        return value, self.mod.flatten(g)

    def curvature(self, params, v):
        self.n_curv += 1
        return self.mod.flatten(self.curv(params, self.x, self.y, self.mod.unflatten(v)))


class DistributedProblem(Problem):
    """The same over a data set on Dask: each call one full-dataset pass of
    bpgen.distributed (the parameters go to the workers once per call)."""

    def __init__(self, arch, mod, data, curvature: str, **kw):
        import bpgen.distributed as bd
        self.bd, self.arch, self.mod, self.kw = bd, arch, mod, kw
        self.x, self.y, self.lengths = data["x"], data["y"], data.get("lengths")
        self.curv = bd.ggn_vp if curvature == "ggn" else bd.hvp
        self.n_grad = self.n_loss = self.n_curv = 0

    def loss(self, theta) -> float:
        self.n_loss += 1
        return self.bd.loss(self.arch, self.mod.unflatten(theta), self.x, self.y,
                            self.lengths, **self.kw)

    def loss_and_grad(self, theta):
        self.n_grad += 1
        value, g = self.bd.loss_and_grad(self.arch, self.mod.unflatten(theta), self.x,
                                         self.y, self.lengths, **self.kw)
        return value, self.mod.flatten(g)

    def curvature(self, params, v):
        self.n_curv += 1
        return self.mod.flatten(self.curv(self.arch, params, self.x, self.y,
                                          self.mod.unflatten(v), self.lengths, **self.kw))


def truncated_cg(apply_a, b, x0, max_iter: int, eps: float = 5e-4):
    """Approximately minimise q(x) = 0.5 xᵀAx - bᵀx by conjugate gradients.

    Martens' stopping rule: after i > k iterations (k = max(10, i/10)), stop
    when q improved by less than a fraction k*eps of its value over the last
    k iterations.  At non-positive curvature pᵀAp <= 0 (possible with the
    exact Hessian) stop and return the last iterate.  Returns (x, iterations).
    """
    x = x0.copy()
    r = b - apply_a(x)
    p = r.copy()
    rr = r @ r
    qs = [0.5 * x @ (b - r) - b @ x]            # q(x) = -0.5 xᵀ(b + r)
    for i in range(1, max_iter + 1):
        ap = apply_a(p)
        pap = p @ ap
        if pap <= 0:
            if i == 1 and not x.any():         # nothing yet: go along -g scaled
                x = p * (rr / max(abs(pap), 1e-12 * rr))
            return x, i
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = r @ r
        qs.append(-0.5 * x @ (b + r))
        k = max(10, i // 10)
        if i > k and qs[-1] < 0 and (qs[-1] - qs[-1 - k]) / qs[-1] < k * eps:
            return x, i
        if rr_new <= 1e-20 * (b @ b):
            return x, i
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, max_iter


def newton_cg(prob: Problem, theta, target: float, max_outer: int = 200,
              lam: float = 1.0, max_cg: int = 100, log=print):
    """Hessian-free Newton-CG; returns (theta, outer iterations, history)."""
    mod = prob.mod
    d_prev = np.zeros_like(theta)
    value, g = prob.loss_and_grad(theta)
    history = [value]
    for it in range(1, max_outer + 1):
        params = mod.unflatten(theta)

        def apply_a(v):
            return prob.curvature(params, v) + lam * v

        d, n_cg = truncated_cg(apply_a, -g, 0.95 * d_prev, max_cg)
        # the undamped quadratic model's predicted change
        q = g @ d + 0.5 * d @ (apply_a(d) - lam * d)
        step, gd = 1.0, g @ d
        if gd >= 0:                              # not a descent direction: use -g
            d, gd = -g, -(g @ g)
        new = prob.loss(theta + d)
        rho = (new - value) / q if q < 0 else -1.0
        while new > value + 1e-4 * step * gd and step > 1e-6:
            step *= 0.5
            new = prob.loss(theta + step * d)
        if rho < 0.25:                           # Levenberg-Marquardt damping
            lam *= 1.5
        elif rho > 0.75:
            lam /= 1.5
        theta = theta + step * d
        d_prev = step * d
        value, g = prob.loss_and_grad(theta)
        history.append(value)
        log(f"  newton-cg {it:3d}: loss {value:.6f}  cg iterations {n_cg:3d}  "
            f"step {step:.3g}  rho {rho:6.3f}  lambda {lam:.3g}")
        if value <= target:
            return theta, it, history
    return theta, None, history


def gradient_descent(prob: Problem, theta, eta: float, target: float, max_iter: int):
    """theta -= eta * g until loss <= target; returns (theta, iterations or None)."""
    for it in range(max_iter + 1):
        value, g = prob.loss_and_grad(theta)
        if value <= target:
            return theta, it
        if not math.isfinite(value) or value > 1e6:
            return theta, None                   # diverged
        theta = theta - eta * g
    return theta, None


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c",
                    help="generated module to use (default: c)")
    ap.add_argument("--problem", choices=("digits", "sine"), default="digits",
                    help="digits MLP on a subset of sklearn's digits (default), or a "
                         "small regression MLP")
    ap.add_argument("--curvature", choices=("ggn", "hessian"), default="ggn",
                    help="CG's matrix: Gauss-Newton (ggn_vp, default) or the exact "
                         "Hessian (hvp)")
    ap.add_argument("--n", type=int, default=None, help="training samples (default 400)")
    ap.add_argument("--target", type=float, default=None,
                    help="target training loss (default: 0.02 digits, 0.01 sine)")
    ap.add_argument("--gd-max-iter", type=int, default=3000,
                    help="iteration cap per GD step size (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="init_params seed (default 0)")
    ap.add_argument("--top", type=int, default=8, help="eigenvalues to print (default 8)")
    ap.add_argument("--png", metavar="FILE", help="plot the Hessian spectrum to FILE "
                                                  "(needs matplotlib)")
    ap.add_argument("--quiet", action="store_true", help="no per-iteration lines")
    ap.add_argument("--max-outer", type=int, default=200,
                    help="Newton-CG's cap on outer iterations (default 200)")
    ap.add_argument("--save-params", metavar="FILE.npz",
                    help="write the Newton-CG solution there (mod.save_params; an "
                         "existing file is refused)")
    dist = ap.add_argument_group("distributed data (bpgen.distributed, docs/distributed.md)")
    dist.add_argument("--data", metavar="DIR.zarr|FILE.npz|X.npy",
                      help="the data set on disk: every pass a full-dataset one on Dask")
    dist.add_argument("--targets", metavar="Y.npy", help="y, with --data X.npy")
    dist.add_argument("--arch", metavar="FILE.yaml",
                      help="the network, with --data (default: --problem's)")
    dist.add_argument("--scheduler", metavar="ADDRESS",
                      help="the Dask scheduler (default: an embedded LocalCluster)")
    dist.add_argument("--workers", type=int, default=None,
                      help="worker processes of the embedded LocalCluster (default 2)")
    dist.add_argument("--chunk", type=int, default=None,
                      help="samples per chunk (default: the Zarr store's chunks, 8192 "
                           "otherwise)")
    dist.add_argument("--no-persist", action="store_true",
                      help="read the data from --data at every pass instead of keeping "
                           "it in the workers' memory")
    args = ap.parse_args(argv)
    target = args.target if args.target is not None else DEFAULT_TARGET[args.problem]
    for name in ("max_outer", "workers", "chunk", "n"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    if args.data is None:
        for name in ("targets", "arch", "scheduler", "workers", "chunk", "no_persist"):
            if getattr(args, name) not in (None, False):
                ap.error(f"--{name.replace('_', '-')}: only with --data")
    elif args.n is not None:
        ap.error("--n: with --data the samples are --data's")
    if args.scheduler is not None and args.workers is not None:
        ap.error("--workers: the embedded LocalCluster's; not with --scheduler")
    if args.save_params and os.path.lexists(args.save_params):
        ap.error(f"--save-params: {args.save_params} exists (remove it or choose another "
                 f"name)")
    plt = None
    if args.png:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--png needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    if args.data is not None:
        return run_distributed(args, target, plt)

    arch, x, y = load_problem(args.problem, args.n or 400)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bpgen-newton-") as tmp:
        mod = bpgen.build(arch, backend=args.backend, out_dir=tmp)
    name = json.loads(mod.ARCHITECTURE)["name"]
    print(f"{args.problem}: {name} ({args.backend} backend, built in "
          f"{time.perf_counter() - t0:.1f}s), {mod.N_PARAMS} parameters, {len(x)} samples, "
          f"full batch; target training loss {target:g}")
    theta0 = mod.flatten(mod.init_params(args.seed))
    lam_max = bpgen.spectrum(mod, mod.unflatten(theta0), x, y, k=1, full=False)["largest"][0]
    print(f"initial loss {mod.loss(mod.unflatten(theta0), x, y):.4f}; largest Hessian "
          f"eigenvalue at init {lam_max:.3g} (Lanczos on hvp), so the classical GD step "
          f"bound 2/lambda_max is {2 / lam_max:.2g}")

    # ---- Newton-CG
    prob = Problem(mod, x, y, args.curvature)
    t0 = time.perf_counter()
    theta_ncg, it_ncg, _ = newton_cg(prob, theta0.copy(), target, max_outer=args.max_outer,
                                     log=(lambda *a: None) if args.quiet else print)
    t_ncg = time.perf_counter() - t0
    ncg_counts = (prob.n_grad, prob.n_loss, prob.n_curv)

    # ---- gradient descent, step tuned over a grid
    results = []
    for eta in GD_STEPS[args.problem]:
        p = Problem(mod, x, y, args.curvature)
        t0 = time.perf_counter()
        _, it = gradient_descent(p, theta0.copy(), eta, target, args.gd_max_iter)
        results.append((it if it is not None else math.inf, eta, p.n_grad,
                        time.perf_counter() - t0))
        print(f"  gradient descent eta {eta:<5g}: "
              + (f"{it} iterations" if it is not None
                 else f"not there after {args.gd_max_iter} iterations"))
    it_gd, eta, gd_grads, t_gd = min(results)

    print(f"\niterations to reach training loss {target:g}:")
    print(f"  {'method':<34} {'iterations':>10} {'gradients':>10} {'curv. prods':>12} "
          f"{'time s':>7}")
    ncg_label = f"Newton-CG ({'Gauss-Newton' if args.curvature == 'ggn' else 'Hessian'})"
    print(f"  {ncg_label:<34} {it_ncg if it_ncg else 'not reached':>10} "
          f"{ncg_counts[0]:>10} {ncg_counts[2]:>12} {t_ncg:7.2f}")
    gd_label = f"gradient descent (best eta {eta:g})"
    print(f"  {gd_label:<34} {it_gd if it_gd < math.inf else 'not reached':>10} "
          f"{gd_grads:>10} {0:>12} {t_gd:7.2f}")
    if it_ncg and it_gd < math.inf:
        print(f"  Newton-CG needed {it_gd / it_ncg:.0f}x fewer iterations")

    if args.save_params:
        mod.save_params(args.save_params, mod.unflatten(theta_ncg))
        print(f"wrote {args.save_params}")

    # ---- the spectrum of the trained network's Hessian
    t0 = time.perf_counter()
    params = mod.unflatten(theta_ncg)
    res = bpgen.spectrum(mod, params, x, y, k=args.top, smallest=True, full=True)
    ev = res["all"]
    tol = 1e-10 * max(abs(ev).max(), 1.0)
    print(f"\nexact Hessian spectrum at the Newton-CG solution ({res['method']}, "
          f"{mod.N_PARAMS}x{mod.N_PARAMS}, {time.perf_counter() - t0:.1f}s):")
    print(f"  largest {args.top}: " + " ".join(f"{v:.4g}" for v in res["largest"]))
    print(f"  smallest {args.top}: " + " ".join(f"{v:.3g}" for v in res["smallest"]))
    print(f"  {int((ev < -tol).sum())} negative, {int((abs(ev) <= tol).sum())} zero, "
          f"{int((ev > tol).sum())} positive; {int((abs(ev) > 1e-3 * ev[-1]).sum())} "
          f"eigenvalues above 1e-3 of the largest")
    if args.png:
        plot_spectrum(plt, ev, f"Hessian spectrum of {name} after Newton-CG "
                               f"({mod.N_PARAMS} parameters)", args.png)
    return 0


def plot_spectrum(plt, ev, title, path):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.hist(ev, bins=100, log=True)
    a1.set_xlabel("eigenvalue")
    a1.set_ylabel("count (log scale)")
    a1.set_title("all eigenvalues" if ev.size > 1 else "eigenvalues")
    a2.semilogy(np.arange(1, ev.size + 1), np.maximum(np.abs(ev[::-1]), 1e-16), ".",
                markersize=2)
    a2.set_xlabel("rank")
    a2.set_ylabel("|eigenvalue|")
    a2.set_title("sorted magnitudes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


# --------------------------------------------------------------------------
# the same Newton-CG on a data set on disk, on Dask

def load_data(bd, args):
    """--data as Dask arrays {"x", "y", "lengths"}: a Zarr store (read chunk by
    chunk on the workers), an .npz (read here, then split) or X.npy with
    --targets Y.npy (memory-mapped on the workers)."""
    if args.data.endswith(".npy"):
        if args.targets is None:
            raise ValueError("--targets: --data X.npy needs y as --targets Y.npy")
        return {"x": bd.from_npy(args.data, chunks=args.chunk),
                "y": bd.from_npy(args.targets, chunks=args.chunk), "lengths": None}
    if args.targets is not None:
        raise ValueError("--targets: only with --data X.npy (a store or .npz holds y)")
    return bd.load(args.data, chunks=args.chunk)


def run_distributed(args, target: float, plt) -> int:
    import contextlib

    try:
        import distributed

        import bpgen.distributed as bd
        bd._dask()
    except ImportError as exc:
        print(f"--data needs the distributed extra: {exc}", file=sys.stderr)
        return 2
    arch = args.arch or (str(DIGITS_ARCH) if args.problem == "digits" else SINE_ARCH)
    try:
        data = load_data(bd, args)
        t0 = time.perf_counter()
        mod = bd.module(arch, args.backend)     # the client's: init_params, flatten, ...
    except (ValueError, OSError) as exc:
        print(f"newton_cg.py: error: {exc}", file=sys.stderr)
        return 2
    name = json.loads(mod.ARCHITECTURE)["name"]
    with contextlib.ExitStack() as stack:
        if args.scheduler is not None:
            try:
                client = stack.enter_context(distributed.Client(args.scheduler, timeout=10))
            except (OSError, TimeoutError) as exc:
                print(f"newton_cg.py: error: --scheduler: cannot connect to "
                      f"{args.scheduler}: {exc}", file=sys.stderr)
                return 2
            where = f"the scheduler at {args.scheduler}"
        else:
            workers = args.workers or 2
            cluster = stack.enter_context(bd.local_cluster(workers))
            client = stack.enter_context(distributed.Client(cluster))
            where = (f"an embedded LocalCluster of {workers} worker "
                     f"process{'es' if workers > 1 else ''}")
        if not args.no_persist:              # x, y kept in the workers' memory, each
            # worker a run of consecutive chunks (a few tasks per worker and pass)
            data["x"], data["y"], data["lengths"] = bd.persist(
                data["x"], data["y"], data["lengths"], client=client)
        kw = {"client": client, "backend": args.backend}
        try:
            return _newton_on_dask(args, target, plt, bd, arch, mod, name, data, kw, where,
                                   time.perf_counter() - t0)
        except ValueError as exc:            # bad data: the chunk and its samples
            print(f"newton_cg.py: error: {exc}", file=sys.stderr)
            return 2


def _newton_on_dask(args, target, plt, bd, arch, mod, name, data, kw, where, t_build):
    x, y, lengths = data["x"], data["y"], data["lengths"]
    n, chunks = int(x.shape[0]), len(x.chunks[0])
    print(f"{args.data}: {name} ({args.backend} backend, built in {t_build:.1f}s), "
          f"{mod.N_PARAMS} parameters, {n} samples in {chunks} chunks on {where}, "
          f"full-dataset passes; target training loss {target:g}")
    theta0 = mod.flatten(mod.init_params(args.seed))
    params0 = mod.unflatten(theta0)
    lam_max = bd.spectrum(arch, params0, x, y, k=1, lengths=lengths, full=False,
                          **kw)["largest"][0]
    print(f"initial loss {bd.loss(arch, params0, x, y, lengths, **kw):.4f}; largest "
          f"Hessian eigenvalue at init {lam_max:.3g} (Lanczos on the distributed hvp)")

    prob = DistributedProblem(arch, mod, data, args.curvature, **kw)
    t0 = time.perf_counter()
    theta, it, history = newton_cg(prob, theta0.copy(), target, max_outer=args.max_outer,
                                   log=(lambda *a: None) if args.quiet else print)
    t_ncg = time.perf_counter() - t0
    label = f"Newton-CG ({'Gauss-Newton' if args.curvature == 'ggn' else 'Hessian'})"
    print(f"\n{label}: training loss {history[0]:.6f} -> {history[-1]:.6f}, "
          + (f"target {target:g} reached in {it} iterations" if it
             else f"target {target:g} not reached in {args.max_outer} iterations")
          + f"; {prob.n_grad} gradients, {prob.n_curv} curvature products, {prob.n_loss} "
            f"losses (each a full pass), {t_ncg:.2f}s")
    print("  (gradient descent's step-size grid, thousands of full passes, is run only "
          "on in-memory data)")
    if args.save_params:
        mod.save_params(args.save_params, mod.unflatten(theta))
        print(f"wrote {args.save_params}")

    t0 = time.perf_counter()
    res = bd.spectrum(arch, mod.unflatten(theta), x, y, k=args.top, lengths=lengths,
                      smallest=True, **kw)
    print(f"\nexact Hessian spectrum at the Newton-CG solution ({res['method']} on the "
          f"distributed {'hmp' if res['method'] == 'eigh' else 'hvp'}, "
          f"{time.perf_counter() - t0:.1f}s):")
    print(f"  largest {len(res['largest'])}: " + " ".join(f"{v:.4g}" for v in res["largest"]))
    print(f"  smallest {len(res['smallest'])}: "
          + " ".join(f"{v:.3g}" for v in res["smallest"]))
    if "all" in res:
        ev = res["all"]
        tol = 1e-10 * max(abs(ev).max(), 1.0)
        print(f"  {int((ev < -tol).sum())} negative, {int((abs(ev) <= tol).sum())} zero, "
              f"{int((ev > tol).sum())} positive")
    if args.png:
        ev = res.get("all", np.sort(np.concatenate([res["smallest"], res["largest"]])))
        plot_spectrum(plt, ev, f"Hessian spectrum of {name} after Newton-CG on {args.data}",
                      args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
