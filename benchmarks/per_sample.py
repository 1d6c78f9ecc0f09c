"""Per-sample gradients (issue 19) for benchmarks/run.py: bpgen's
``per_sample_grad_norms`` and ``clipped_grad`` against its own
``loss_and_grad`` and against the per-sample routes of PyTorch
(``torch.func.vmap(torch.func.grad(loss of one sample))``), JAX
(``jax.jit(jax.vmap(jax.grad(loss of one sample)))``) and Opacus
(``GradSampleModule``, hooks: MLP cases only, where the model is a plain
``nn.Sequential``; an optional peer).

Usage, from the repository root::

    python benchmarks/run.py --per-sample-only [--quick]
    python benchmarks/run.py --cases ps_mlp_mnist,ps_lstm

Each case builds the C and NumPy modules, and times (the method of run.py:
one process pinned to one CPU, one thread, median of R repeats):

* bpgen C and bpgen NumPy: ``loss_and_grad``, ``per_sample_grad_norms``,
  ``clipped_grad(max_norm)`` with max_norm the median per-sample norm (half
  the samples clipped), and the ratios of the last two to the first (the
  issue's targets: <= 1.3x and <= 1.5x), measured interleaved (the median
  over rounds of each round's ratio: see interleaved_ratios);
* each peer: the norms (vmap(grad), then the norm of every sample's
  gradient) and the clipped gradient (the same, then the clip factors and
  the weighted mean), checked against bpgen C's norms and clipped gradient
  (max relative error printed; above 1e-8 flagged);
* "C / best": bpgen C's clipped_grad over the fastest peer's.

The peak memory of ``loss_and_grad``, ``per_sample_grad_norms``,
``clipped_grad`` and ``per_sample_grads`` (bpgen C) is measured on
MEMORY (the 784-256-256-10 MLP at N = 1,024), each in a forked child
started before any call (and before the timings, so before JAX or torch
start threads): ru_maxrss after one call minus the RSS before.
``per_sample_grads`` there allocates its 2.1 GB result (it fits under
the module's MAX_RESULT_BYTES on a machine of 4.3 GB or more; below, it
is refused and the refusal is printed).
"""
import json
import os
import sys
import warnings

import numpy as np

CE = "softmax_cross_entropy"


def _mlp(name, sizes, act):
    layers = [{"type": "dense", "units": u, "activation": act} for u in sizes[1:-1]]
    layers.append({"type": "dense", "units": sizes[-1]})
    return {"name": name, "dtype": "float64", "input": {"features": sizes[0]},
            "layers": layers, "loss": CE}


def _cases():
    from run import CASES, recurrent
    digits = dict(CASES["cnn_digits"][0], name="ps_cnn_digits")
    return {  # name -> (architecture, N)
        "ps_mlp_small": (_mlp("ps_mlp_small", [64, 128, 128, 10], "tanh"), 32),
        "ps_mlp_mnist": (_mlp("ps_mlp_mnist", [784, 256, 256, 10], "relu"), 128),
        "ps_lstm": (recurrent("ps_lstm", "lstm", 32, 50, 128, 4), 16),
        "ps_cnn_digits": (digits, 64),
    }


MEMORY = ("ps_mlp_mnist", 1024)


def _without_l2(arch):
    """The per-sample loss of the peers: the architecture without l2."""
    return {k: v for k, v in arch.items() if k != "regularization"}


# ------------------------------------------------------------------ the peers

def torch_per_sample(arch, params, x, y, max_norm):
    """(norms call, clipped call, read): torch.func.vmap(grad) of one sample's loss."""
    import torch
    from peers import _torch_loss
    from torch.func import grad, vmap
    loss_fn = _torch_loss(_without_l2(arch))
    P = {k: torch.tensor(v) for k, v in params.items()}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = x.shape[0]

    def one(P, xi, yi):
        return loss_fn(P, xi[None], yi[None])
    per = vmap(grad(one), in_dims=(None, 0, 0))

    def norms():
        g = per(P, xt, yt)
        return torch.sqrt(sum((v.reshape(n, -1) ** 2).sum(1) for v in g.values()))

    def clipped():
        g = per(P, xt, yt)
        nrm = torch.sqrt(sum((v.reshape(n, -1) ** 2).sum(1) for v in g.values()))
        c = torch.clamp(max_norm / nrm, max=1.0)
        return {k: torch.tensordot(c, v, dims=1) / n for k, v in g.items()}, nrm

    def read(result):
        grads, nrm = result
        return {k: v.numpy() for k, v in grads.items()}, nrm.numpy()
    return norms, clipped, read


def jax_per_sample(arch, params, x, y, max_norm):
    """(norms call, clipped call, read): jax.jit(jax.vmap(jax.grad(one sample's loss)))."""
    import jax
    import jax.numpy as jnp
    from peers import _jax_loss
    loss_fn = _jax_loss(_without_l2(arch))
    P = {k: jnp.asarray(v) for k, v in params.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    per = jax.vmap(jax.grad(lambda P, xi, yi: loss_fn(P, xi[None], yi[None])),
                   in_axes=(None, 0, 0))

    def _norms(g):
        return jnp.sqrt(sum(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1)
                            for v in g.values()))

    @jax.jit
    def norms_fn(P, x, y):
        return _norms(per(P, x, y))

    @jax.jit
    def clipped_fn(P, x, y):
        g = per(P, x, y)
        nrm = _norms(g)
        c = jnp.minimum(1.0, max_norm / nrm)
        return {k: jnp.tensordot(c, v, axes=1) / x.shape[0] for k, v in g.items()}, nrm

    def read(result):
        grads, nrm = result
        return {k: np.asarray(v) for k, v in grads.items()}, np.asarray(nrm)
    return (lambda: jax.block_until_ready(norms_fn(P, xj, yj)),
            lambda: jax.block_until_ready(clipped_fn(P, xj, yj)), read)


def opacus_per_sample(arch, params, x, y, max_norm):
    """(norms call, clipped call, read): Opacus's GradSampleModule (hooks)
    on an nn.Sequential of Linear layers (MLP cases only)."""
    import torch
    from opacus import GradSampleModule
    if arch["input"].get("steps") or any(lay["type"] != "dense" for lay in arch["layers"]):
        raise NotImplementedError("the Opacus peer is written for MLPs only")
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
    mods, keys = [], []
    for i, lay in enumerate(arch["layers"]):
        w = params[f"l{i}.W"]
        lin = torch.nn.Linear(*w.shape).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T))
            lin.bias.copy_(torch.from_numpy(params[f"l{i}.b"]))
        mods.append(lin)
        keys += [(f"l{i}.W", True), (f"l{i}.b", False)]
        if lay.get("activation", "identity") != "identity":
            mods.append(acts[lay["activation"]]())
    model = GradSampleModule(torch.nn.Sequential(*mods))
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = x.shape[0]
    loss_fn = torch.nn.CrossEntropyLoss(reduction="mean")

    def samples():
        model.zero_grad(set_to_none=True)
        loss_fn(model(xt), yt).backward()
        return [p.grad_sample for p in model.parameters()]

    def norms():
        return torch.sqrt(sum((g.reshape(n, -1) ** 2).sum(1) for g in samples()))

    def clipped():
        gs = samples()
        nrm = torch.sqrt(sum((g.reshape(n, -1) ** 2).sum(1) for g in gs))
        c = torch.clamp(max_norm / nrm, max=1.0)
        return [torch.tensordot(c, g, dims=1) / n for g in gs], nrm

    def read(result):
        # grad_sample: each sample's own gradient (Opacus undoes the mean's 1/n)
        gs, nrm = result
        out = {}
        for (key, transpose), g in zip(keys, gs):
            out[key] = (g.T if transpose else g).numpy()
        return out, nrm.numpy()
    return norms, clipped, read


PEERS = {"PyTorch vmap": torch_per_sample, "JAX vmap": jax_per_sample,
         "Opacus": opacus_per_sample}


def _available(name):
    try:
        __import__({"PyTorch vmap": "torch", "JAX vmap": "jax", "Opacus": "opacus"}[name])
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------- memory

def _rss_mib():
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def peak_memory(fn):
    """MiB the call fn() adds to the peak RSS, in a forked child (nothing
    called before the fork: its workspaces start empty)."""
    import resource
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            before = _rss_mib()
            fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            os.write(w, json.dumps({"mib": peak - before}).encode())
        except BaseException as exc:      # e.g. per_sample_grads refused
            os.write(w, json.dumps({"error": str(exc)[:200]}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data.decode() or '{"error": "no report"}')


def memory_section(tmp, tools):
    """Peak memory of the per-sample functions on MEMORY, bpgen C."""
    name, n = MEMORY
    arch = _cases()[name][0]
    mod, _ = tools.build(arch, "c", os.path.join(tmp, name + "_mem"))
    params = tools.make_params(mod)
    x, y = tools.make_data(arch, n)
    calls = {"loss_and_grad": lambda: mod.loss_and_grad(params, x, y),
             "per_sample_grad_norms": lambda: mod.per_sample_grad_norms(params, x, y),
             "clipped_grad": lambda: mod.clipped_grad(params, x, y, 1.0),
             "per_sample_grads": lambda: mod.per_sample_grads(params, x, y)}
    out = {who: peak_memory(fn) for who, fn in calls.items()}
    out["N_PARAMS"] = mod.N_PARAMS
    out["N"] = n
    return out


# ---------------------------------------------------------------------- cases

def interleaved_ratios(calls, seconds, rounds):
    """Median over ``rounds`` of (time of fn) / (time of loss_and_grad), each
    round timing a batch of ~0.05 s of every call in turn (the order
    alternating): a load that changes during the run (other processes on
    a shared machine) moves both sides of a ratio together."""
    import time
    number = max(1, round(0.05 / seconds))
    names = list(calls)
    per = {k: [] for k in names}
    for i in range(rounds):
        took = {}
        for k in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(number):
                calls[k]()
            took[k] = time.perf_counter() - t0
        for k in names:
            per[k].append(took[k] / took["loss_and_grad"])
    return {k: float(np.median(v)) for k, v in per.items() if k != "loss_and_grad"}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def run_case(name, arch, n, tmp, repeats, tools):
    print(f"{name}: building...", end=" ", flush=True)
    out_dir = os.path.join(tmp, name)
    mc, _ = tools.build(arch, "c", out_dir)
    mn, _ = tools.build(arch, "numpy", out_dir)
    params = tools.make_params(mc)
    x, y = tools.make_data(arch, n)
    norms = mc.per_sample_grad_norms(params, x, y)
    max_norm = float(np.median(norms))
    _, clipped, _ = mc.clipped_grad(params, x, y, max_norm)
    times, errors, notes = {}, {}, []
    print("timing...", end=" ", flush=True)
    ratios = {}
    for who, mod in (("bpgen C", mc), ("bpgen NumPy", mn)):
        calls = {"loss_and_grad": lambda: mod.loss_and_grad(params, x, y),
                 "norms": lambda: mod.per_sample_grad_norms(params, x, y),
                 "clipped": lambda: mod.clipped_grad(params, x, y, max_norm)}
        times[who] = {k: tools.time_call(fn, repeats) for k, fn in calls.items()}
        ratios[who] = interleaved_ratios(calls, times[who]["loss_and_grad"], 3 * repeats)
    for who, make in PEERS.items():
        if not _available(who):
            notes.append(f"{who} is not installed")
            continue
        try:
            norms_call, clipped_call, read = make(arch, params, x, y, max_norm)
        except NotImplementedError as exc:
            notes.append(f"{who}: {exc}")
            continue
        grads, peer_norms = read(clipped_call())
        errors[who] = max(_rel(peer_norms, norms),
                          max(_rel(grads[k], clipped[k]) for k in clipped))
        times[who] = {"norms": tools.time_call(norms_call, repeats),
                      "clipped": tools.time_call(clipped_call, repeats)}
    print("done", flush=True)
    peers = [t["clipped"] for who, t in times.items() if who in PEERS]
    c = times["bpgen C"]
    return {"case": name, "N": n, "N_PARAMS": mc.N_PARAMS,
            "us": {who: {k: v * 1e6 for k, v in t.items()} for who, t in times.items()},
            "norms_over_loss_and_grad": {who: ratios[who]["norms"] for who in ratios},
            "clipped_over_loss_and_grad": {who: ratios[who]["clipped"] for who in ratios},
            "c_clipped_over_best_peer": c["clipped"] / min(peers) if peers else None,
            "rel_error_vs_c": errors, "notes": notes}


def print_rows(rows):
    head = (f"{'case':<14} {'N':>4} {'C l&g us':>10} {'C norms':>9} {'C clip':>8} "
            f"{'NumPy norms':>11} {'NumPy clip':>10} {'torch clip us':>13} "
            f"{'JAX clip us':>11} {'Opacus clip us':>14} {'C/best':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        us = r["us"]
        no, cl = r["norms_over_loss_and_grad"], r["clipped_over_loss_and_grad"]

        def peer(who):
            return f"{us[who]['clipped']:.0f}" if who in us else "-"
        best = r["c_clipped_over_best_peer"]
        print(f"{r['case']:<14} {r['N']:>4} {us['bpgen C']['loss_and_grad']:>10.1f} "
              f"{no['bpgen C']:>8.2f}x {cl['bpgen C']:>7.2f}x {no['bpgen NumPy']:>10.2f}x "
              f"{cl['bpgen NumPy']:>9.2f}x {peer('PyTorch vmap'):>13} {peer('JAX vmap'):>11} "
              f"{peer('Opacus'):>14} {'-' if best is None else format(best, '.3f'):>7}")
    for r in rows:
        for who, e in r["rel_error_vs_c"].items():
            flag = "  DISAGREES" if e > 1e-8 else ""
            print(f"  {r['case']}: {who} norms and clipped gradient vs bpgen C: max rel "
                  f"error {e:.1e}{flag}")
        for note in r["notes"]:
            print(f"  {r['case']}: {note}")


def run_section(names, tmp, repeats, tools, memory=True):
    cases = _cases()
    print("Per-sample gradients (issue 19): norms = per_sample_grad_norms, clip = "
          "clipped_grad (max_norm: the median norm),\nas ratios to the same backend's "
          "loss_and_grad; peers' clipped gradient (vmap(grad) + clipping) in us; C/best = "
          "bpgen C's\nclipped_grad / the fastest peer's (< 1: bpgen is faster)\n")
    # the memory first: its children are forked before JAX or torch start threads
    mem = memory_section(tmp, tools) if memory else None
    rows = [run_case(name, *cases[name], tmp, repeats, tools) for name in names]
    print()
    print_rows(rows)
    out = {"cases": rows}
    if memory:
        name, n = MEMORY
        print(f"\npeak memory, bpgen C, {name} at N = {n:,} (N_PARAMS = {mem['N_PARAMS']:,}; "
              f"per-sample gradients would be {n * mem['N_PARAMS'] * 8 / 2**20:.0f} MiB), "
              f"MiB above the RSS before the call, fresh forked process:")
        for who in ("loss_and_grad", "per_sample_grad_norms", "clipped_grad",
                    "per_sample_grads"):
            m = mem[who]
            print(f"  {who:22s} " + (f"{m['mib']:.1f} MiB" if "mib" in m else m["error"]))
        out["memory"] = mem
    return out


def names():
    return list(_cases())


if __name__ == "__main__":
    sys.exit("run it through benchmarks/run.py --per-sample-only")
