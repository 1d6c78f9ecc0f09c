"""Speed benchmark for bpgen's generated ``loss_and_grad`` (a script, not a test).

Run from the repository root::

    python benchmarks/bench.py            # full run, about a minute
    python benchmarks/bench.py --quick    # fewer, shorter repeats

It builds a few dense networks into a temporary directory with both backends
and, for batch sizes N in (1, 32, 256), times ``loss_and_grad`` for the C
backend, the NumPy backend and, if ``import torch`` works, a PyTorch peer that
computes the same loss and gradients with ``torch.nn.functional`` from the same
parameters.  Each time is the best of several runs of many calls (the number of
calls is scaled so one run takes ~0.2 s), reported in microseconds per call,
with the ratios numpy/c and torch/c (> 1 means C is faster).  Speeds are only
meaningful relative to each other within one run.  Everything is single
threaded: torch.set_num_threads(1), and the BLAS thread variables below default
to 1 (set them in the environment to override).  Finally it prints the C
wrapper's per-call overhead: ``loss_and_grad`` and ``forward`` on the tiny
4-8-2 network with N=1.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")        # before NumPy is imported

import argparse
import sys
import tempfile
import timeit

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bpgen  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def dense(name, sizes, acts, loss, dtype="float64", l2=None):
    """An architecture dict: input sizes[0], dense layers sizes[1:] with acts."""
    arch = {"name": name, "dtype": dtype, "input": {"features": sizes[0]},
            "layers": [{"type": "dense", "units": u, "activation": a}
                       for u, a in zip(sizes[1:], acts)],
            "loss": loss}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


CE = "softmax_cross_entropy"
ARCHS = [  # (label, architecture)
    ("tiny 4-8-2", dense("bench_tiny", [4, 8, 2], ["tanh", "identity"], "mse")),
    ("digits 64-32-10", dense("bench_digits", [64, 32, 10], ["tanh", "identity"],
                              CE, l2=1e-4)),
    ("mlp 784-256-128-10", dense("bench_big64", [784, 256, 128, 10],
                                 ["relu", "relu", "identity"], CE)),
    ("mlp 784-256-128-10", dense("bench_big32", [784, 256, 128, 10],
                                 ["relu", "relu", "identity"], CE, dtype="float32")),
]
BATCHES = (1, 32, 256)


def best_time(fn, target, repeat):
    """Seconds per call of fn(): best of `repeat` runs of ~`target` s each."""
    timer = timeit.Timer(fn)
    number = 1
    while True:
        dt = timer.timeit(number)
        if dt >= target / 10 or number >= 10**6:
            break
        number *= 10
    number = max(1, int(number * target / max(dt, 1e-9)))
    return min(timer.repeat(repeat, number)) / number


def make_data(arch, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, arch["input"]["features"])).astype(arch["dtype"])
    out = arch["layers"][-1]["units"]
    if arch["loss"] == CE:
        y = rng.integers(0, out, size=n)
    else:
        y = rng.standard_normal((n, out)).astype(arch["dtype"])
    return x, y


def torch_peer(arch, params, x, y):
    """A closure computing (loss, grads) like loss_and_grad, with PyTorch."""
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    keys, leaves = list(P), list(P.values())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    acts = {"identity": lambda z: z, "tanh": torch.tanh, "relu": F.relu}
    layers = [(f"l{i}", acts[L.get("activation", "identity")])
              for i, L in enumerate(arch["layers"])]
    lam = arch.get("regularization", {}).get("l2", 0.0)

    def fn():
        h = xt
        for name, act in layers:
            h = act(F.linear(h, P[name + ".W"].t(), P[name + ".b"]))
        if arch["loss"] == CE:
            loss = F.cross_entropy(h, yt)
        else:
            loss = 0.5 * F.mse_loss(h, yt, reduction="sum") / h.shape[0]
        if lam:
            loss = loss + 0.5 * lam * sum((P[n + ".W"] ** 2).sum() for n, _ in layers)
        grads = torch.autograd.grad(loss, leaves)
        return loss.item(), dict(zip(keys, grads))
    return fn


def agree(ref, other, dtype):
    """Whether (loss, grads) pairs match to the dtype's tolerance."""
    tol = 1e-4 if dtype == "float32" else 1e-9
    (l0, g0), (l1, g1) = ref, other
    return np.isclose(l0, l1, rtol=tol, atol=tol) and all(
        np.allclose(g0[k], np.asarray(g1[k]), rtol=tol, atol=tol) for k in g0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = ap.parse_args()
    target, repeat = (0.05, 2) if args.quick else (0.2, 5)
    if torch is not None:
        torch.set_num_threads(1)
    print(f"bpgen {bpgen.__version__}, numpy {np.__version__}, "
          + (f"torch {torch.__version__} (1 thread)" if torch else "torch: not installed"))
    if torch is None:
        print("note: `import torch` failed, so the torch column is skipped")
    print(f"best of {repeat} runs of ~{target} s each; times in us per loss_and_grad call;"
          " ratios > 1 mean C is faster\n")

    head = (f"{'architecture':<20} {'dtype':<8} {'N':>4} {'C us':>10} {'NumPy us':>10} "
            f"{'torch us':>10} {'numpy/c':>8} {'torch/c':>8}")
    print(head)
    print("-" * len(head))
    mods = {}
    with tempfile.TemporaryDirectory(prefix="bpgen_bench_") as tmp:
        for label, arch in ARCHS:
            out = os.path.join(tmp, arch["name"])
            mc = bpgen.build(arch, backend="c", out_dir=out)
            mn = bpgen.build(arch, backend="numpy", out_dir=out)
            mods[arch["name"]] = mc, mn
            params = mc.init_params(0)
            for n in BATCHES:
                x, y = make_data(arch, n)
                ref = mc.loss_and_grad(params, x, y)
                flags = ""
                if not agree(ref, mn.loss_and_grad(params, x, y), arch["dtype"]):
                    flags += "  [numpy disagrees with C!]"
                t_c = best_time(lambda: mc.loss_and_grad(params, x, y), target, repeat)
                t_n = best_time(lambda: mn.loss_and_grad(params, x, y), target, repeat)
                t_t = cell_t = rat_t = "-"
                if torch is not None:
                    peer = torch_peer(arch, params, x, y)
                    if not agree(ref, peer(), arch["dtype"]):
                        flags += "  [torch disagrees with C!]"
                    t_t = best_time(peer, target, repeat)
                    cell_t, rat_t = f"{t_t * 1e6:10.1f}", f"{t_t / t_c:8.2f}"
                print(f"{label:<20} {arch['dtype']:<8} {n:>4} {t_c * 1e6:10.1f} "
                      f"{t_n * 1e6:10.1f} {cell_t:>10} {t_n / t_c:8.2f} {rat_t:>8}{flags}",
                      flush=True)

        # Per-call overhead of the C wrapper: the tiny net's compute is negligible.
        tiny = ARCHS[0][1]
        mc, mn = mods[tiny["name"]]
        params = mc.init_params(0)
        x, y = make_data(tiny, 1)
        print(f"\nper-call overhead, {ARCHS[0][0]} net, N=1 (us per call):")
        print(f"{'':<16} {'C':>8} {'NumPy':>8}")
        for what, call in (("loss_and_grad", lambda m: m.loss_and_grad(params, x, y)),
                           ("forward", lambda m: m.forward(params, x))):
            t_c = best_time(lambda: call(mc), target, repeat)
            t_n = best_time(lambda: call(mn), target, repeat)
            print(f"{what:<16} {t_c * 1e6:8.1f} {t_n * 1e6:8.1f}")


if __name__ == "__main__":
    main()
