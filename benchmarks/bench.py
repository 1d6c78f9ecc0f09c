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

A second-order table follows (``--skip-first-order`` prints only it), for the
digits MLP (64-32-10, 2410 parameters) and a small LSTM (the sine example's
1-step-input LSTM with 16 units over 20 steps and a dense head, 1169
parameters): for N in (32, 256), the time of ``hvp`` and of ``ggn_vp``
relative to ``loss_and_grad`` in each backend (the R-operator's target is at
most 3x a gradient), and, for N=32, the time of the full exact ``hessian``
(N_PARAMS hvp columns) in each backend against
``torch.autograd.functional.hessian`` of the same loss written in PyTorch (the
torch column is skipped with a note when torch is missing; the two Hessians
are checked to agree).
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
    ap.add_argument("--skip-first-order", action="store_true",
                    help="only the second-order table")
    args = ap.parse_args()
    target, repeat = (0.05, 2) if args.quick else (0.2, 5)
    if torch is not None:
        torch.set_num_threads(1)
    print(f"bpgen {bpgen.__version__}, numpy {np.__version__}, "
          + (f"torch {torch.__version__} (1 thread)" if torch else "torch: not installed"))
    if torch is None:
        print("note: `import torch` failed, so the torch column is skipped")
    if not args.skip_first_order:
        first_order(target, repeat)
    second_order(target, repeat, quick=args.quick)


def first_order(target, repeat):
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


# --------------------------------------------------------------------------
# second order: hvp / ggn_vp against loss_and_grad; hessian against torch

LSTM_ARCH = {"name": "bench_lstm", "dtype": "float64", "input": {"features": 1, "steps": 20},
             "layers": [{"type": "lstm", "units": 16}, {"type": "dense", "units": 1}],
             "loss": {"type": "mse", "steps": "last"}}
SECOND_ORDER = [  # (label, architecture)
    ("digits 64-32-10", ARCHS[1][1]),
    ("lstm 1-16(x20)-1", LSTM_ARCH),
]
SO_BATCHES = (32, 256)
HESSIAN_BATCH = 32


def make_data2(arch, n, seed=0):
    """make_data for dense or (steps: last) sequence architectures."""
    if "steps" not in arch["input"]:
        return make_data(arch, n, seed)
    rng = np.random.default_rng(seed)
    inp = arch["input"]
    x = rng.standard_normal((n, inp["steps"], inp["features"]))
    y = rng.standard_normal((n, arch["layers"][-1]["units"]))
    return x, y


def torch_flat_loss(arch, shapes, x, y):
    """loss(theta) in PyTorch for a flat theta in bpgen's flat order."""
    keys = list(shapes)
    sizes = [int(np.prod(shapes[k])) for k in keys]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lam = arch.get("regularization", {}).get("l2", 0.0)
    acts = {"identity": lambda z: z, "tanh": torch.tanh, "relu": F.relu}

    def unflat(theta):
        return {k: t.view(shapes[k]) for k, t in zip(keys, torch.split(theta, sizes))}

    if arch["layers"][0]["type"] == "lstm":
        units = arch["layers"][0]["units"]

        def loss(theta):
            P = unflat(theta)
            h = xt.new_zeros((xt.shape[0], units))
            c = xt.new_zeros((xt.shape[0], units))
            for t in range(xt.shape[1]):
                a = xt[:, t] @ P["l0.Wx"] + h @ P["l0.Wh"] + P["l0.b"]
                i, f, g, o = torch.split(a, units, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            out = h @ P["l1.W"] + P["l1.b"]                  # steps: last
            return 0.5 * ((out - yt) ** 2).sum() / xt.shape[0]
        return loss

    layers = [(f"l{i}", acts[L.get("activation", "identity")])
              for i, L in enumerate(arch["layers"])]

    def loss(theta):
        P = unflat(theta)
        h = xt
        for name, act in layers:
            h = act(h @ P[name + ".W"] + P[name + ".b"])
        value = (F.cross_entropy(h, yt) if arch["loss"] == CE
                 else 0.5 * ((h - yt) ** 2).sum() / h.shape[0])
        if lam:
            value = value + 0.5 * lam * sum((P[n + ".W"] ** 2).sum() for n, _ in layers)
        return value
    return loss


def once(fn, repeat):
    """Best wall time of `repeat` single calls (for calls of a second or so)."""
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def second_order(target, repeat, quick=False):
    print("\nsecond order: hvp and ggn_vp time / loss_and_grad time, same module and batch "
          "(target: hvp <= 3x)")
    head = (f"{'architecture':<18} {'P':>5} {'backend':<7} {'N':>4} {'grad us':>9} "
            f"{'hvp us':>9} {'ggn us':>9} {'hvp/grad':>9} {'ggn/grad':>9}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory(prefix="bpgen_bench2_") as tmp:
        mods = {}
        for label, arch in SECOND_ORDER:
            out = os.path.join(tmp, arch["name"])
            mods[label] = {"c": bpgen.build(arch, backend="c", out_dir=out),
                           "numpy": bpgen.build(arch, backend="numpy", out_dir=out)}
        for label, arch in SECOND_ORDER:
            mc = mods[label]["c"]
            params = mc.init_params(0)
            rng = np.random.default_rng(1)
            v = mc.unflatten(rng.standard_normal(mc.N_PARAMS))
            for backend in ("c", "numpy"):
                m = mods[label][backend]
                for n in SO_BATCHES:
                    x, y = make_data2(arch, n)
                    t_g = best_time(lambda: m.loss_and_grad(params, x, y), target, repeat)
                    t_h = best_time(lambda: m.hvp(params, x, y, v), target, repeat)
                    t_gn = best_time(lambda: m.ggn_vp(params, x, y, v), target, repeat)
                    flag = "  [> 3x]" if t_h > 3 * t_g else ""
                    print(f"{label:<18} {m.N_PARAMS:>5} {backend:<7} {n:>4} {t_g * 1e6:9.1f} "
                          f"{t_h * 1e6:9.1f} {t_gn * 1e6:9.1f} {t_h / t_g:9.2f} "
                          f"{t_gn / t_g:9.2f}{flag}", flush=True)

        n = HESSIAN_BATCH
        reps = 1 if quick else 3
        print(f"\nfull exact Hessian, N={n}: seconds per call (best of {reps}); "
              f"torch = torch.autograd.functional.hessian (reverse-over-reverse, one row "
              f"per backward pass)")
        head = (f"{'architecture':<18} {'P':>5} {'C s':>8} {'NumPy s':>8} {'torch s':>8} "
                f"{'torch/c':>8} {'numpy/c':>8}")
        print(head)
        print("-" * len(head))
        for label, arch in SECOND_ORDER:
            mc, mn = mods[label]["c"], mods[label]["numpy"]
            params = mc.init_params(0)
            x, y = make_data2(arch, n)
            h_c = mc.hessian(params, x, y)
            flags = ""
            if np.max(np.abs(mn.hessian(params, x, y) - h_c)) > 1e-10 * np.max(np.abs(h_c)):
                flags += "  [numpy disagrees with C!]"
            t_c = once(lambda: mc.hessian(params, x, y), reps)
            t_n = once(lambda: mn.hessian(params, x, y), reps)
            cell_t = rat_t = "-"
            if torch is not None:
                fn = torch_flat_loss(arch, mc.PARAM_SHAPES, x, y)
                theta = torch.from_numpy(mc.flatten(params))
                h_t = torch.autograd.functional.hessian(fn, theta).numpy()
                if np.max(np.abs(h_t - h_c)) > 1e-9 * np.max(np.abs(h_c)):
                    flags += "  [torch disagrees with C!]"
                t_t = once(lambda: torch.autograd.functional.hessian(fn, theta), reps)
                cell_t, rat_t = f"{t_t:8.3f}", f"{t_t / t_c:8.1f}"
            print(f"{label:<18} {mc.N_PARAMS:>5} {t_c:8.3f} {t_n:8.3f} {cell_t:>8} "
                  f"{rat_t:>8} {t_n / t_c:8.1f}{flags}", flush=True)
        if torch is None:
            print("note: `import torch` failed, so the torch column is skipped")


if __name__ == "__main__":
    main()
