"""Per-call overhead of bpgen.torch and bpgen.jax (a script, not a test).

Run from the repository root::

    python benchmarks/interop_overhead.py [--backend c|numpy] [--n 8] [--repeats 7]

On the tiny MLP (4-16-16-3, tanh, mse) at N = 8 it times the module's own
``loss`` and ``loss_and_grad`` and the same work through each wrapper:

* PyTorch: ``bpgen.torch.loss(mod)(params, x, y)`` under ``torch.no_grad``
  (the custom operator ``bpgen::loss`` and the autograd.Function), the loss
  with parameters that require grad plus ``torch.autograd.grad`` (the
  module's gradient through autograd), and one training step of
  ``bpgen.torch.module`` (``zero_grad``, ``loss(x, y).backward()``,
  ``torch.optim.SGD.step``) against the module's ``loss_and_grad`` plus the
  same NumPy update;
* JAX: ``jax.jit(loss)`` and ``jax.jit(jax.grad(loss))`` (one
  ``pure_callback`` each, compiled once before timing) and the eager calls.

Each time is the median of ``--repeats`` runs of many calls (scaled so a
run takes ~0.2 s), in microseconds per call; "overhead" is the wrapper's
time minus the module's own call.  Single threaded (BLAS at one thread,
torch.set_num_threads(1)).
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BPGEN_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bpgen  # noqa: E402

ARCH = {"name": "overhead_mlp", "input": {"features": 4},
        "layers": [{"type": "dense", "units": 16, "activation": "tanh"},
                   {"type": "dense", "units": 16, "activation": "tanh"},
                   {"type": "dense", "units": 3}],
        "loss": "mse"}


def per_call(fn, repeats):
    """Median µs per call over ``repeats`` runs of ~0.2 s each."""
    fn()
    number, _ = timeit.Timer(fn).autorange()
    number = max(1, number)
    runs = timeit.Timer(fn).repeat(repeat=repeats, number=number)
    return 1e6 * statistics.median(runs) / number


def torch_references(torch, x, y, params, repeats):
    """What PyTorch itself costs: an empty autograd.Function with its
    backward, and the same network's SGD step written in PyTorch."""
    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.new_zeros(())

        @staticmethod
        def backward(ctx, g):
            return g.expand(3)
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rows = [("torch floor: empty Function + autograd.grad",
             per_call(lambda: torch.autograd.grad(Empty.apply(a), [a]), repeats), None)]
    ws = [torch.from_numpy(v.copy()).requires_grad_() for v in params.values()]
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(ws, lr=0.0)

    def step():
        opt.zero_grad()
        h = torch.tanh(tx @ ws[0] + ws[1])
        h = torch.tanh(h @ ws[2] + ws[3])
        out = h @ ws[4] + ws[5]
        (0.5 * ((out - ty) ** 2).sum(1).mean()).backward()
        opt.step()
    rows.append(("torch reference: the same SGD step in PyTorch", per_call(step, repeats), None))
    return rows


def plain_jax_loss(jax, p, x, y):
    jnp = jax.numpy
    h = jnp.tanh(x @ p["l0.W"] + p["l0.b"])
    h = jnp.tanh(h @ p["l1.W"] + p["l1.b"])
    out = h @ p["l2.W"] + p["l2.b"]
    return 0.5 * ((out - y) ** 2).sum(1).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mod = bpgen.build(ARCH, backend=args.backend, out_dir=tmp)
        rng = np.random.default_rng(0)
        params = mod.init_params(0)
        x = rng.standard_normal((args.n, 4))
        y = rng.standard_normal((args.n, 3))
        rows = []
        own_loss = per_call(lambda: mod.loss(params, x, y), args.repeats)
        own_grad = per_call(lambda: mod.loss_and_grad(params, x, y), args.repeats)
        rows.append(("module loss", own_loss, None))
        rows.append(("module loss_and_grad", own_grad, None))

        def sgd_numpy():
            _, g = mod.loss_and_grad(params, x, y)
            for k in params:
                params[k] -= 0.0 * g[k]
        own_step = per_call(sgd_numpy, args.repeats)
        rows.append(("module loss_and_grad + NumPy SGD update", own_step, None))
        try:
            import torch
        except ImportError:
            torch = None
            print("(PyTorch not installed: its rows are skipped)")
        if torch is not None:
            import bpgen.torch as bt
            torch.set_num_threads(1)
            f = bt.loss(mod)
            tp = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)

            def no_grad():
                with torch.no_grad():
                    f(tp, tx, ty)
            rows.append(("torch: loss, no grad", per_call(no_grad, args.repeats), own_loss))
            leaves = {k: v.clone().requires_grad_() for k, v in tp.items()}
            lv = list(leaves.values())
            rows.append(("torch: loss + autograd.grad",
                         per_call(lambda: torch.autograd.grad(f(leaves, tx, ty), lv),
                                  args.repeats), own_grad))
            key = bt._key(mod)
            mats = list(tp.values())
            rows.append(("torch: torch.ops.bpgen.grad alone",
                         per_call(lambda: torch.ops.bpgen.grad(key, mats, tx, ty, None),
                                  args.repeats), own_grad))
            net = bt.module(mod)
            opt = torch.optim.SGD(net.parameters(), lr=0.0)

            def step():
                opt.zero_grad()
                net.loss(tx, ty).backward()
                opt.step()
            rows.append(("torch: nn.Module SGD step", per_call(step, args.repeats), own_step))
            rows += torch_references(torch, x, y, params, args.repeats)
        try:
            import jax
        except ImportError:
            jax = None
            print("(JAX not installed: its rows are skipped)")
        if jax is not None:
            jax.config.update("jax_enable_x64", True)
            import bpgen.jax as bj
            jf = bj.loss(mod)
            jp = {k: jax.numpy.asarray(v) for k, v in params.items()}
            jx, jy = jax.numpy.asarray(x), jax.numpy.asarray(y)
            jl = jax.jit(jf)
            jg = jax.jit(jax.grad(jf))
            rows.append(("jax: jit(loss)", per_call(lambda: jl(jp, jx, jy).block_until_ready(),
                                                    args.repeats), own_loss))
            rows.append(("jax: jit(grad(loss))",
                         per_call(lambda: jax.block_until_ready(jg(jp, jx, jy)), args.repeats),
                         own_grad))
            rows.append(("jax: loss (jitted inside)",
                         per_call(lambda: jf(jp, jx, jy).block_until_ready(), args.repeats),
                         own_loss))
            empty = jax.jit(lambda a: jax.pure_callback(
                lambda b: np.zeros((), np.float64), jax.ShapeDtypeStruct((), np.float64), a,
                vmap_method="sequential"))
            rows.append(("jax floor: jit of an empty pure_callback",
                         per_call(lambda: empty(jx).block_until_ready(), args.repeats), None))
            jnet = jax.jit(jax.value_and_grad(lambda p: plain_jax_loss(jax, p, jx, jy)))
            rows.append(("jax reference: jit(value_and_grad) in jnp",
                         per_call(lambda: jax.block_until_ready(jnet(jp)), args.repeats), None))
    print(f"tiny MLP 4-16-16-3, N = {args.n}, {args.backend} backend, {mod.N_PARAMS} "
          f"parameters; µs per call (median of {args.repeats} runs)")
    print(f"{'call':<42s}{'µs':>10s}{'overhead µs':>14s}")
    for name, t, base in rows:
        over = f"{t - base:14.1f}" if base is not None else f"{'':>14s}"
        print(f"{name:<42s}{t:10.1f}{over}")


if __name__ == "__main__":
    main()
