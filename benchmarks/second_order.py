"""The second-order section of benchmarks/run.py: bpgen's ``hessian``, ``hvp``
and ``hessian_diag`` against JAX and PyTorch (float64, one pinned CPU, one
thread, like the first-order section; the cases are SECOND_ORDER in run.py).

For each case the script builds the bpgen C and NumPy modules and calls every
contender once on the same parameters and data:

- ``hessian``: bpgen's full (P, P) Hessian in the flat order;
  ``jax.jit(jax.hessian(loss))`` and ``torch.func.hessian(loss)`` of a loss of
  the flat parameter vector (benchmarks/peers.py unflattens it like bpgen);
- ``hvp``: bpgen's ``hvp`` with a random v; JAX forward over reverse
  (``jax.jvp`` of ``jax.grad``, jitted); PyTorch double backward;
- ``hmp``: bpgen's ``hmp`` with a random V of HMP_K columns (one forward and
  backward pass, the tangent pass over chunks of columns at once); JAX
  forward over reverse vmapped over the columns, jitted; PyTorch
  ``torch.func.jvp`` of ``torch.func.grad`` vmapped likewise;
- ``hessian_diag``: bpgen only (neither peer has an exact diagonal short of P
  Hessian-vector products).  A few diagonal entries, the first and one random
  entry of every parameter array, are checked against the peers' hvp with a
  unit vector.  Its peak memory is measured in a fresh process (this file run as a
  script, which forks the measuring process: see child_main): ``ru_maxrss``
  before and after one call, and tracemalloc's peak during it (NumPy's
  allocations are traced, C's own ``malloc`` is not).

Every result is compared with bpgen C's, ``max|a - b| / max|b|``, and above
1e-8 flagged as a disagreement.  A bpgen function that refuses (``ValueError``:
the result would not fit in memory) is reported with its message instead of
a time.  Then each contender is timed: calls under 0.05 s like the
first-order section (warm-up, then the median of R repeats of ~0.1 s
batches); slower ones one call at a time, the median of R calls, or of fewer
for calls over 1 s (as many as fit in 10 s, at least one).

"C / own l&g" is bpgen C's time over its own ``loss_and_grad`` on the same
data (hvp and hessian_diag rows).
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

TOL = 1e-8          # float64
SLOW = 1.0          # s: calls slower than this are timed fewer times ...
BUDGET = 10.0       # ... as many as fit in this many seconds (at least one)
FUNCTIONS = {"hessian": "hessian", "hvp": "hvp", "diag": "hessian_diag", "hmp": "hmp"}
HMP_K = 16          # columns of V in the hmp cases


def timed(fn, repeats, time_call):
    """(median seconds per call, calls timed or None when batched) within the budget."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first < 0.05:
        return time_call(fn, repeats), None
    samples = [first]
    want = repeats if first <= SLOW else max(1, min(repeats, int(BUDGET / first)))
    while len(samples) < want:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), len(samples)


def rel_error(ref, other):
    """max|a - b| / max|b|, b = ref."""
    other = np.asarray(other)
    if other.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(other - ref)) / np.max(np.abs(ref)))


def flat(keys, values):
    return np.concatenate([np.ravel(values[k]) for k in keys])


def diag_check(keys, shapes, ref, hvp_call, hvp_read, rng):
    """Worst error of sampled diagonal entries e_iᵀ H e_i from a peer's hvp, and how many."""
    starts = np.cumsum([0] + [int(np.prod(shapes[k])) for k in keys])
    picks = sorted({int(i) for a, b in zip(starts[:-1], starts[1:])
                    for i in (a, rng.integers(a, b))})
    worst = 0.0
    for i in picks:
        e = np.zeros(len(ref))
        e[i] = 1.0
        worst = max(worst, abs(float(hvp_read(hvp_call(e))[i]) - ref[i]))
    return worst / float(np.max(np.abs(ref))), len(picks)


def peak_memory(module_path, data_path):
    """Run this file as a fresh child process; its JSON report (see child_main)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-memory",
                           module_path, data_path], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(module_path, data_path):
    """Import the generated module, load the inputs, measure one hessian_diag call.

    Linux keeps ru_maxrss across execve, and a process started by
    subprocess inherits its parent's peak RSS that way (hundreds of MiB with
    JAX and torch loaded).  So the measuring is done in a forked grandchild:
    a fork starts a new count at the (small) current RSS of this process."""
    pid = os.fork()
    if pid:
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    try:
        _measure(module_path, data_path)
        sys.stdout.flush()
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _status_mib(field):
    """A field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _measure(module_path, data_path):
    import importlib.util
    import resource
    import tracemalloc

    spec = importlib.util.spec_from_file_location("bench_module", module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with np.load(data_path) as data:
        params = {k: data["p_" + k] for k in mod.PARAM_SHAPES}
        x, y = data["x"], data["y"]

    def maxrss():       # KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    out = {"rss_before_mib": _status_mib("VmRSS"), "maxrss_before_mib": maxrss()}
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        mod.hessian_diag(params, x, y)
    except ValueError as e:
        out["refused"] = str(e)
    out["seconds_traced"] = time.perf_counter() - t0
    out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out["maxrss_after_mib"] = maxrss()
    out["maxrss_increase_mib"] = out["maxrss_after_mib"] - out["maxrss_before_mib"]
    out["vmhwm_after_mib"] = _status_mib("VmHWM")
    print(json.dumps(out))


def run_case(name, arch, n, kind, tmp, repeats, tools):
    """Build, check and time one second-order case; returns its row of results."""
    import peers

    print(f"{name}: building...", end=" ", flush=True)
    out_dir = os.path.join(tmp, name)
    mc, build_c = tools.build(arch, "c", out_dir)
    mn, _ = tools.build(arch, "numpy", out_dir)
    keys, shapes = list(mc.PARAM_SHAPES), mc.PARAM_SHAPES
    params = tools.make_params(mc)
    x, y = tools.make_data(arch, n)
    rng = np.random.default_rng(1)
    v = {k: rng.standard_normal(s) for k, s in shapes.items()}
    V = rng.standard_normal((mc.N_PARAMS, HMP_K))
    function = FUNCTIONS[kind]

    def bpgen_call(mod):
        args = {"hvp": (params, x, y, v), "hmp": (params, x, y, V)}.get(kind, (params, x, y))
        return lambda: getattr(mod, function)(*args)
    calls = {"bpgen C": bpgen_call(mc), "bpgen NumPy": bpgen_call(mn)}
    identity = (lambda r: r) if kind in ("hessian", "hmp") else (lambda r: flat(keys, r))
    reads = {"bpgen C": identity, "bpgen NumPy": identity}
    hvps = {}                       # peer -> (call, read) of its hvp, for the diag check
    for peer, library in (("JAX", peers.jax), ("PyTorch", peers.torch)):
        if library is None:
            continue
        prefix = "jax" if peer == "JAX" else "torch"
        if kind == "hessian":
            calls[peer], reads[peer] = getattr(peers, prefix + "_hessian_peer")(
                arch, keys, params, x, y)
        elif kind == "hmp":
            calls[peer], reads[peer] = getattr(peers, prefix + "_hmp_peer")(
                arch, keys, params, x, y, V)
        else:
            hvp = getattr(peers, prefix + "_hvp_peer")(arch, keys, params, x, y, v)
            if kind == "hvp":
                calls[peer], reads[peer] = hvp
            else:
                hvps[peer] = hvp

    results, refused, failed, first_call = {}, {}, {}, {}
    for who, call in calls.items():
        t0 = time.perf_counter()
        try:
            results[who] = reads[who](call())
        except ValueError as e:
            if not who.startswith("bpgen"):
                raise
            refused[who] = str(e)
        except Exception as e:      # a peer that cannot do this: noted, not fatal
            if who.startswith("bpgen"):
                raise
            failed[who] = f"{type(e).__name__}: {e}"
        first_call[who] = time.perf_counter() - t0
    ref = results.get("bpgen C")
    errors, checked = {}, {}
    if ref is not None:
        errors = {who: rel_error(ref, r) for who, r in results.items() if who != "bpgen C"}
        for peer, (call, read) in hvps.items():
            errors[peer], checked[peer] = diag_check(keys, shapes, ref, call, read, rng)
    note = ", ".join(
        f"{who} {e:.1e}" + (f" ({checked[who]} entries by hvp)" if who in checked else "")
        + (" DISAGREES" if e > TOL else "") for who, e in errors.items())
    print(f"P = {mc.N_PARAMS}; worst relative error vs bpgen C: {note or '-'}"
          + "".join(f"; {who} refused" for who in refused)
          + "".join(f"; {who} failed: {msg}" for who, msg in failed.items()), flush=True)

    wall, cpu = time.perf_counter(), time.process_time()
    times, counts = {}, {}
    for who in results:
        times[who], counts[who] = timed(calls[who], repeats, tools.time_call)
    own = {}
    if kind != "hessian":
        for who, mod in (("bpgen C", mc), ("bpgen NumPy", mn)):
            own[who] = tools.time_call(lambda: mod.loss_and_grad(params, x, y), repeats)
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)

    memory = {}
    if kind == "diag":
        data_path = os.path.join(out_dir, "inputs.npz")
        np.savez(data_path, x=x, y=y, **{"p_" + k: a for k, a in params.items()})
        for who, backend in (("bpgen C", "c"), ("bpgen NumPy", "numpy")):
            memory[who] = peak_memory(
                os.path.join(out_dir, f"{arch['name']}_{backend}.py"), data_path)

    peer_times = [times[p] for p in ("JAX", "PyTorch") if p in times]
    c = times.get("bpgen C")
    return {"case": name, "N": n, "P": mc.N_PARAMS, "function": function,
            "us": {who: t * 1e6 for who, t in times.items()},
            "calls_timed": counts, "first_call_s": first_call,
            "refused": refused, "failed": failed,
            "rel_error_vs_c": errors, "diag_entries_checked": checked,
            "disagrees": [w for w, e in errors.items() if e > TOL],
            "c_over_best_peer": c / min(peer_times) if c and peer_times else None,
            "loss_and_grad_us": {who: t * 1e6 for who, t in own.items()},
            "c_over_own_loss_and_grad": c / own["bpgen C"] if c and own else None,
            "peak_memory": memory, "build_c_s": build_c, "cpu_share": cpu_share}


def fmt_time(us):
    if us is None:
        return "-"
    return f"{us:.1f} us" if us < 1e4 else f"{us / 1e3:.1f} ms"


def print_table(rows, repeats):
    head = (f"{'case':<11} {'N':>4} {'P':>7} {'bpgen C':>11} {'bpgen NumPy':>11} "
            f"{'JAX':>11} {'PyTorch':>11} {'C/best peer':>11} {'C/own l&g':>9}")
    print(head)
    print("-" * len(head))
    notes = []
    for r in rows:
        cells = []
        for who in ("bpgen C", "bpgen NumPy", "JAX", "PyTorch"):
            if who in r["refused"]:
                cells.append("refused")
            elif who in r["failed"]:
                cells.append("failed")
            else:
                calls = r["calls_timed"].get(who)
                star = "*" if calls is not None and calls < repeats else ""
                cells.append(fmt_time(r["us"].get(who)) + star)
        print(f"{r['case']:<11} {r['N']:>4} {r['P']:>7} "
              + " ".join(f"{c:>11}" for c in cells)
              + f" {fmt(r['c_over_best_peer'], '.2f'):>11}"
              + f" {fmt(r['c_over_own_loss_and_grad'], '.1f'):>9}")
        for who, msg in {**r["refused"], **r["failed"]}.items():
            notes.append(f"{r['case']}: {who} {'refused' if who in r['refused'] else 'failed'}"
                         f": {msg}")
        for who in r["disagrees"]:
            notes.append(f"{r['case']}: {who} DISAGREES with bpgen C "
                         f"(relative error {r['rel_error_vs_c'][who]:.1e})")
        for who, calls in r["calls_timed"].items():
            if calls is not None and calls < repeats:
                notes.append(f"{r['case']}: * {who}: median of {calls} call(s) "
                             f"({r['us'][who] / 1e6:.1f} s each)")
        if r["cpu_share"] < 0.9:
            notes.append(f"{r['case']}: the process had only {r['cpu_share']:.0%} of its "
                         "CPU while timing: contended")
        for who, m in r["peak_memory"].items():
            if "error" in m:
                notes.append(f"{r['case']}: {who} peak memory: the child failed: {m['error']}")
                continue
            what = "refused" if "refused" in m else "one call"
            notes.append(f"{r['case']}: {who} {r['function']} peak memory ({what}, fresh "
                         f"process): ru_maxrss +{m['maxrss_increase_mib']:.1f} MiB "
                         f"({m['maxrss_before_mib']:.1f} -> {m['maxrss_after_mib']:.1f}), "
                         f"tracemalloc peak {m['tracemalloc_peak_mib']:.1f} MiB")
    if notes:
        print()
        print("\n".join(notes))


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def run_section(cases, names, tmp, repeats, tools):
    """The second-order rows of ``names`` (keys of ``cases``), and print their table."""
    rows = [run_case(name, *cases[name], tmp, repeats, tools) for name in names]
    print("\nsecond order, float64: median time per call (us, or ms); C/best peer = bpgen "
          "C / the faster of JAX and PyTorch;\nC/own l&g = bpgen C / bpgen C's own "
          "loss_and_grad; hessian_diag has no peer (exact diagonal: P hvps)\n")
    print_table(rows, repeats)
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--peak-memory":
        sys.exit("usage: second_order.py --peak-memory MODULE.py INPUTS.npz "
                 "(the child process of benchmarks/run.py)")
    child_main(sys.argv[2], sys.argv[3])
