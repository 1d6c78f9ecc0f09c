"""Benchmark bpgen's loss_and_grad against JAX and PyTorch, single threaded.

Usage, from the repository root::

    python benchmarks/run.py                       # full run, a few minutes
    python benchmarks/run.py --quick               # 3 repeats instead of 7
    python benchmarks/run.py --cases mlp_tiny,lstm --json results.json
    python benchmarks/run.py --second-order-only   # hessian, hvp, hessian_diag only
    python benchmarks/run.py --threads all --cases mlp_mnist,mlp_mnist_1024
                                                   # every contender at its default (all cores)

Method.  Everything runs in one process pinned to one CPU (the last one this
process may use), with one BLAS / OpenMP / MKL / XLA / torch thread; the
thread variables are only set when they are not already in the environment.
With ``--threads N`` (``all``: the cores this process may use) every
contender runs at N threads instead and the process is not pinned: bpgen's
and NumPy's BLAS (BPGEN_NUM_THREADS, OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS, all set to N), PyTorch (``torch.set_num_threads(N)``) and
XLA at its default (its CPU client uses every core; XLA has no flag for
another count, so for 1 < N < all cores JAX has more threads than N);
``--threads all`` is the "defaults
against defaults" comparison (bpgen C then splits a large call's batch across
its threads, or hands its products to the BLAS's, docs/performance.md,
"Threads").  The header names the BLAS bpgen's C modules
call (from the C build configuration) and its measured GEMM rate at the
run's thread count, beside NumPy's.
Each case is an architecture (MLPs, Elman RNNs, LSTMs, CNNs; see CASES) and a
batch size N.  For each case the script:

1. builds the bpgen C module into a temporary directory with an empty compile
   cache, timing it (derive + emit + compile), then the NumPy module;
2. computes ``loss_and_grad`` with bpgen C on the same parameters and data as
   every other contender (bpgen NumPy; ``jax.jit(jax.value_and_grad(loss))``
   with float64 enabled; PyTorch eager autograd; the JAX and PyTorch losses are
   written by hand in benchmarks/peers.py; "hand NumPy", the forward and
   backward passes written out by hand in NumPy on preallocated arrays,
   benchmarks/handwritten.py, for the MLP, Elman and LSTM cases, "-" for the
   others) and prints the worst relative error
   of the loss and gradients, ``max|a - b| / max|b|``, against bpgen C; an
   error above 1e-6 (float64) or 1e-3 (float32) is flagged;
3. times each contender: a warm-up of at least 3 calls and 0.2 s, then the
   median over R repeats (7, or 3 with --quick) of a batch of calls sized to
   take ~0.1 s, in microseconds per call;
4. counts the floating-point operations of the matrix products in one
   ``loss_and_grad`` (2·m·n·k per product, from bpgen's derived program; a
   product inside a recurrent loop counts once per step; a convolution's
   products have one row per output pixel and sample, a dimension like
   ``64*N``) and divides them by
   the machine's GEMM rate at the run's thread count (NumPy, 1024×1024×1024, float64 or
   float32 like the case) to get the "GEMM bound": the time of the products
   alone at full GEMM speed.  "C frac" is this bound / bpgen C's time.

A row is flagged when the process got less than 90% of its CPU while timing
(CPU time / wall time): another process was running on the same CPU.

"C / best" is bpgen C's time over the faster of JAX and PyTorch (below 1:
bpgen C is faster; hand NumPy is not a candidate).  "NumPy / hand" is bpgen
NumPy's time over hand NumPy's (above 1: the hand-written code is faster).  A
peer whose library is not installed is skipped with a note.  Finally the C
wrapper's per-call overhead is measured: ``loss_and_grad`` and ``forward`` on
mlp_tiny with N=1.

A second-order table follows (float64, the cases in SECOND_ORDER): the full
``hessian`` of small networks, ``hvp``, ``hmp`` (16 columns) and ``hessian_diag`` (with its peak
memory in a fresh process) against ``jax.hessian`` / forward-over-reverse JAX
and ``torch.func.hessian`` / double-backward PyTorch, each result checked
against bpgen C's to 1e-8; see benchmarks/second_order.py for the method.
A per-sample table follows (issue 19; benchmarks/per_sample.py):
``per_sample_grad_norms`` and ``clipped_grad`` against the module's own
``loss_and_grad`` and against torch.func / JAX vmap(grad) and Opacus, on
the MLPs, the LSTM and the digits CNN, and their peak memory.
With PyTorch installed, a last table times a torch.optim training step
through ``bpgen.torch.module`` against the same step in plain PyTorch
(issue 20; benchmarks/torch_step.py).
--first-order-only, --second-order-only, --per-sample-only and
--torch-step-only run one of the tables; --cases takes names from all.  --json FILE writes every number.
"""
import os
import sys


def _threads_argument():
    """--threads N (or "all": the cores this process may use) from the
    command line, read before NumPy, JAX or torch is imported; None without it."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            text = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            text = arg.split("=", 1)[1]
        else:
            continue
        if text == "all":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            sys.exit(f"run.py: --threads: expected a positive integer or 'all', got {text!r}")
        return n
    return None


#: None: the default run, pinned to one CPU, one thread everywhere (the
#: variables only set when not already in the environment); N: every
#: contender at N threads, not pinned
THREADS = _threads_argument()
_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BPGEN_NUM_THREADS")
for _var in _VARS:            # before NumPy, JAX or torch is imported
    if THREADS is None:
        os.environ.setdefault(_var, "1")
    else:
        os.environ[_var] = str(THREADS)
os.environ["BPGEN_BENCH_THREADS"] = str(THREADS or 1)      # PyTorch's (peers.py)
if (THREADS or 1) == 1:
    if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
if hasattr(os, "sched_setaffinity") and THREADS is None:
    CPU = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {CPU})
else:
    CPU = None

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bpgen  # noqa: E402
from bpgen.derivation import derive_all  # noqa: E402
from bpgen.spec import load_spec  # noqa: E402

import per_sample  # noqa: E402
import second_order  # noqa: E402
import torch_step  # noqa: E402
from handwritten import hand_peer  # noqa: E402
from peers import jax, jax_peer, torch, torch_peer  # noqa: E402

CE = "softmax_cross_entropy"


def mlp(name, sizes, act, loss):
    """Dense layers sizes[1:] on sizes[0] inputs: `act` on the hidden ones, identity last."""
    layers = [{"type": "dense", "units": u, "activation": act} for u in sizes[1:-1]]
    layers.append({"type": "dense", "units": sizes[-1]})
    return {"name": name, "dtype": "float64", "input": {"features": sizes[0]},
            "layers": layers, "loss": loss}


def recurrent(name, cell, features, steps, units, out, dtype="float64"):
    """A recurrent layer and a dense output at every step, mse over all steps."""
    return {"name": name, "dtype": dtype, "input": {"features": features, "steps": steps},
            "layers": [{"type": cell, "units": units}, {"type": "dense", "units": out}],
            "loss": {"type": "mse", "steps": "all"}}


def cnn(name, image, layers, l2=None):
    """`layers` on an image input (channels, height, width), softmax cross-entropy."""
    arch = {"name": name, "dtype": "float64",
            "input": dict(zip(("channels", "height", "width"), image)),
            "layers": layers, "loss": CE}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


def conv(filters, kernel, padding=0):
    return {"type": "conv2d", "filters": filters, "kernel": kernel, "padding": padding,
            "activation": "relu"}


POOL, FLATTEN = {"type": "maxpool2d", "size": 2}, {"type": "flatten"}

def transformer(name, vocab, steps, width, heads):
    """A pre-norm transformer layer over token ids (embedding with positions;
    block(residual){layernorm, causal attention}, block(residual){layernorm,
    dense 4F gelu, dense F}) and a dense head: the next token's logits at
    every step, softmax cross-entropy over all steps."""
    return {"name": name, "dtype": "float64", "input": {"tokens": vocab, "steps": steps},
            "layers": [{"type": "embedding", "units": width, "positions": True},
                       {"type": "block", "residual": True, "layers": [
                           {"type": "layernorm"},
                           {"type": "attention", "heads": heads, "causal": True}]},
                       {"type": "block", "residual": True, "layers": [
                           {"type": "layernorm"},
                           {"type": "dense", "units": 4 * width, "activation": "gelu"},
                           {"type": "dense", "units": width}]},
                       {"type": "dense", "units": vocab}],
            "loss": CE}


CASES = {  # name -> (architecture, N)
    "mlp_tiny": (mlp("mlp_tiny", [4, 16, 16, 3], "tanh", CE), 8),
    "mlp_small": (mlp("mlp_small", [64, 128, 128, 10], "tanh", CE), 32),
    "mlp_mnist": (mlp("mlp_mnist", [784, 256, 256, 10], "relu", CE), 128),
    "mlp_wide": (mlp("mlp_wide", [1024, 2048, 2048, 1024], "tanh", "mse"), 256),
    # a large batch: the case where threads pay (--threads)
    "mlp_mnist_1024": (mlp("mlp_mnist_1024", [784, 256, 256, 10], "relu", CE), 1024),
    "elman_small": (recurrent("elman_small", "rnn", 8, 50, 32, 4), 16),
    "elman_large": (recurrent("elman_large", "rnn", 64, 100, 256, 8), 32),
    "lstm": (recurrent("lstm", "lstm", 32, 50, 128, 4), 16),
    "lstm_f32": (recurrent("lstm_f32", "lstm", 32, 50, 128, 4, "float32"), 16),
    # examples/digits_cnn.yaml: 1x8x8 -> 8x8x8 -> 8x4x4 -> 16x4x4 -> 16x2x2 -> 10
    "cnn_digits": (cnn("cnn_digits", (1, 8, 8),
                       [conv(8, 3, 1), POOL, conv(16, 3, 1), POOL, FLATTEN,
                        {"type": "dense", "units": 10}], l2=1e-4), 64),
    # LeNet-5 sized: 1x28x28 -> 6x24x24 -> 6x12x12 -> 16x8x8 -> 16x4x4 -> 120 -> 84 -> 10
    "lenet": (cnn("lenet", (1, 28, 28),
                  [conv(6, 5), POOL, conv(16, 5), POOL, FLATTEN,
                   {"type": "dense", "units": 120, "activation": "relu"},
                   {"type": "dense", "units": 84, "activation": "relu"},
                   {"type": "dense", "units": 10}]), 64),
    # issue 22: one pre-norm transformer layer, F = 64, h = 4, T = 32, vocabulary 64
    "transformer": (transformer("transformer", 64, 32, 64, 4), 16),
}
SECOND_ORDER = {  # name -> (architecture, N, what is timed); see benchmarks/second_order.py
    "hess_tiny": (mlp("hess_tiny", [4, 16, 16, 3], "tanh", CE), 8, "hessian"),
    "hess_small": (mlp("hess_small", [10, 32, 32, 3], "tanh", CE), 16, "hessian"),
    "hess_lstm": (recurrent("hess_lstm", "lstm", 4, 10, 8, 2), 8, "hessian"),
    # issue 22: the full Hessian of a tiny transformer layer (F = 8, h = 2, T = 6)
    "hess_transformer": (transformer("hess_transformer", 8, 6, 8, 2), 4, "hessian"),
    "hvp_transformer": (transformer("hvp_transformer", 64, 32, 64, 4), 16, "hvp"),
    "hvp_small": (mlp("hvp_small", [64, 128, 128, 10], "tanh", CE), 32, "hvp"),
    "hvp_mnist": (mlp("hvp_mnist", [784, 256, 256, 10], "relu", CE), 128, "hvp"),
    # hmp: 16 Hessian-vector products at once (second_order.HMP_K)
    "hmp_small": (mlp("hmp_small", [64, 128, 128, 10], "tanh", CE), 32, "hmp"),
    "hmp_lstm": (recurrent("hmp_lstm", "lstm", 4, 10, 8, 2), 8, "hmp"),
    "diag_mnist": (mlp("diag_mnist", [784, 256, 256, 10], "tanh", CE), 128, "diag"),
}
PEERS = {"JAX": (jax, jax_peer), "PyTorch": (torch, torch_peer)}   # the "best peer" candidates
HAND = "hand NumPy"                     # benchmarks/handwritten.py: not a "best peer"


# ------------------------------------------------------------------ measuring

def time_call(fn, repeats):
    """Median seconds per call of fn(), after a warm-up (see the module docstring)."""
    start, calls, fastest = time.perf_counter(), 0, float("inf")
    while calls < 3 or time.perf_counter() - start < 0.2:
        t0 = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t0)
        calls += 1
    number = max(1, round(0.1 / fastest))
    return statistics.median(timeit.Timer(fn).repeat(repeats, number)) / number


def gemm_rate(dtype, repeats, size=1024):
    """Single-thread NumPy matmul rate, FLOP/s, of two size x size matrices."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
    return 2 * size**3 / time_call(lambda: a @ b, repeats)


def bpgen_blas():
    """(name, version) of the BLAS bpgen's C modules call (the build
    configuration's), or (None, "") when products run inline."""
    from bpgen.backends.c.build import BUILD
    return BUILD.blas, BUILD.blas_version


def bpgen_blas_rate(dtype, repeats, threads, size=1024):
    """The GEMM rate, FLOP/s, of the BLAS bpgen's C modules call, at
    ``threads`` threads (size^3, like gemm_rate), or None when it cannot be
    called here (no BLAS, or one whose symbols this does not know)."""
    import ctypes
    import glob
    from bpgen.backends.c.build import BUILD
    if not BUILD.blas:
        return None
    paths = [p for d in BUILD.library_dirs for name in BUILD.libraries
             for p in sorted(glob.glob(os.path.join(d, f"lib{name}.so*")))]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            gemm = getattr(lib, f"{prefix}cblas_{'d' if dtype == 'float64' else 's'}gemm", None)
            if gemm is None:
                continue
            setter = (getattr(lib, f"{prefix}openblas_set_num_threads", None)
                      or getattr(lib, "MKL_Set_Num_Threads", None))
            scalar = ctypes.c_double if dtype == "float64" else ctypes.c_float
            rng = np.random.default_rng(0)
            a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
            c = np.empty((size, size), dtype)
            ptr = ctypes.c_void_p

            def call():
                gemm(101, 111, 111, size, size, size, scalar(1), ptr(a.ctypes.data), size,
                     ptr(b.ctypes.data), size, scalar(0), ptr(c.ctypes.data), size)
            if setter is not None:
                setter(threads)
            try:
                return 2 * size**3 / time_call(call, repeats)
            finally:
                if setter is not None:
                    setter(1)       # bpgen's count between calls (see call.py)
    return None


def matmul_flops(arch, n):
    """FLOPs of the matrix products in one loss_and_grad at batch size n."""
    prog = derive_all(load_spec(arch)).programs["loss_and_grad"]

    def size(dim, seq):
        if dim == seq:                  # a loop's per-step slice: N rows
            return n
        if isinstance(dim, int):
            return dim
        return int(np.prod([n if f.strip() == "N" else int(f) for f in dim.split("*")]))

    total = 0
    for op in prog.ops:
        if op.prim != "matmul":
            continue
        loop = prog.loops[op.loop] if op.loop is not None else {"seq": None, "steps": 1}
        m, cols = prog.vars[op.out].shape
        inner = prog.vars[op.args[0]].shape[0 if op.attrs["ta"] else 1]
        total += loop["steps"] * 2 * np.prod([size(d, loop["seq"]) for d in (m, cols, inner)])
    return int(total)


def make_data(arch, n, seed=0):
    """Random x and y of the shapes loss_and_grad takes (labels for the cross-entropy)."""
    rng = np.random.default_rng(seed)
    inp, out = arch["input"], arch["layers"][-1]["units"]
    rows = (n, inp["steps"]) if "steps" in inp else (n,)
    if "tokens" in inp:                         # token ids: x (N, T) integers
        x = rng.integers(0, inp["tokens"], size=rows)
        return x, rng.integers(0, out, size=rows)
    if "channels" in inp:                       # an image: x (N, C, H, W)
        sample = (inp["channels"], inp["height"], inp["width"])
    else:
        sample = (inp["features"],)
    x = rng.standard_normal(rows + sample).astype(arch["dtype"])
    if arch["loss"] == CE:
        return x, rng.integers(0, out, size=rows)
    return x, rng.standard_normal(rows + (out,)).astype(arch["dtype"])


def make_params(module, seed=0):
    """init_params, with small random biases so that every gradient path is exercised."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for key, value in params.items():
        if key.endswith(".b"):
            params[key] = (0.1 * rng.standard_normal(value.shape)).astype(value.dtype)
    return params


def rel_error(ref, other):
    """Worst of the loss's and each gradient's max|a - b| / max|b|, b = ref
    (a gradient that is zero in exact arithmetic, such as attention's bk,
    is measured against the largest gradient entry instead of its noise)."""
    (loss_r, grads_r), (loss_o, grads_o) = ref, other
    errors = [abs(loss_o - loss_r) / abs(loss_r)]
    top = max(float(np.max(np.abs(g))) for g in grads_r.values())
    for key, g in grads_r.items():
        # a floor of 1e-6 of the largest entry: bk's exact zero is rounding
        # noise of ~1e-18, which a floor of 1e-12·top still flagged (5e-5)
        scale = max(float(np.max(np.abs(g))), 1e-6 * top)
        errors.append(np.max(np.abs(np.asarray(grads_o[key]) - g)) / scale)
    return float(max(errors))


def build_timed(arch, backend, out_dir):
    """(module, seconds) of bpgen.build with an empty compile cache."""
    saved = os.environ.get("BPGEN_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bpgen_cache_") as cache:
        os.environ["BPGEN_CACHE_DIR"] = cache
        try:
            t0 = time.perf_counter()
            module = bpgen.build(arch, backend, out_dir=out_dir)
            return module, time.perf_counter() - t0
        finally:
            if saved is None:
                del os.environ["BPGEN_CACHE_DIR"]
            else:
                os.environ["BPGEN_CACHE_DIR"] = saved


def run_case(name, arch, n, tmp, repeats, rates):
    """Build, check and time one case; returns its row of results."""
    print(f"{name}: building...", end=" ", flush=True)
    out_dir = os.path.join(tmp, name)
    mc, build_c = build_timed(arch, "c", out_dir)
    mn, build_numpy = build_timed(arch, "numpy", out_dir)
    params = make_params(mc)
    x, y = make_data(arch, n)

    calls = {"bpgen C": lambda: mc.loss_and_grad(params, x, y),
             "bpgen NumPy": lambda: mn.loss_and_grad(params, x, y)}
    reads = {"bpgen C": lambda r: r, "bpgen NumPy": lambda r: r}
    for peer, (library, make_peer) in PEERS.items():
        if library is not None:
            calls[peer], reads[peer] = make_peer(arch, params, x, y)
    try:
        calls[HAND], reads[HAND] = hand_peer(arch, params, x, y)
    except NotImplementedError:         # CNNs: the column shows "-"
        pass
    ref = calls["bpgen C"]()
    tol = 1e-3 if arch["dtype"] == "float32" else 1e-6
    errors = {who: rel_error(ref, reads[who](call())) for who, call in calls.items()
              if who != "bpgen C"}
    print(f"C {build_c:.1f} s, NumPy {build_numpy:.2f} s; worst relative error vs bpgen C: "
          + ", ".join(f"{who} {e:.1e}" + (" DISAGREES" if e > tol else "")
                      for who, e in errors.items()), flush=True)

    wall, cpu = time.perf_counter(), time.process_time()
    times = {who: time_call(call, repeats) for who, call in calls.items()}
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    flops = matmul_flops(arch, n)
    bound = flops / rates[arch["dtype"]]
    peers = [times[p] for p in PEERS if p in times]
    return {"case": name, "N": n, "dtype": arch["dtype"],
            "us": {who: t * 1e6 for who, t in times.items()},
            "rel_error_vs_c": errors, "disagrees": [w for w, e in errors.items() if e > tol],
            "c_over_best_peer": times["bpgen C"] / min(peers) if peers else None,
            "bpgen_numpy_over_hand_numpy": (times["bpgen NumPy"] / times[HAND]
                                            if HAND in times else None),
            "matmul_flops": flops, "gemm_bound_us": bound * 1e6,
            "c_fraction_of_gemm": bound / times["bpgen C"],
            "build_c_s": build_c, "build_numpy_s": build_numpy, "cpu_share": cpu_share}


def overhead(tmp, repeats):
    """Median µs per call of the C wrapper on mlp_tiny with N=1 (compute is negligible)."""
    arch = CASES["mlp_tiny"][0]
    mc = bpgen.build(arch, "c", out_dir=os.path.join(tmp, "overhead"))
    params = mc.init_params(0)
    x, y = make_data(arch, 1)
    return {"loss_and_grad": time_call(lambda: mc.loss_and_grad(params, x, y), repeats) * 1e6,
            "forward": time_call(lambda: mc.forward(params, x), repeats) * 1e6}


# ------------------------------------------------------------------- reporting

def machine():
    """The machine and library versions, for the header."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model or "unknown", "cores": os.cpu_count(), "pinned_cpu": CPU,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__ if torch else None,
            "jax": jax.__version__ if jax else None, "bpgen": bpgen_revision()}


def bpgen_revision():
    """The repository's commit, with "+changes" when bpgen/ differs from it, or None."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bpgen"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(rows):
    head = (f"{'case':<12} {'N':>4} {'bpgen C us':>11} {'NumPy us':>10} {'JAX us':>10} "
            f"{'PyTorch us':>10} {'hand NumPy us':>13} {'C/best':>7} {'NumPy/hand':>10} "
            f"{'GEMM bnd us':>11} {'C frac':>7} {'build C s':>9} {'build NumPy s':>13}")
    print(head)
    print("-" * len(head))
    for r in rows:
        us = r["us"]
        flag = "  peer disagrees: " + ", ".join(r["disagrees"]) if r["disagrees"] else ""
        if r["cpu_share"] < 0.9:
            flag += f"  [the process had only {r['cpu_share']:.0%} of its CPU: contended]"
        print(f"{r['case']:<12} {r['N']:>4} {us['bpgen C']:>11.1f} {us['bpgen NumPy']:>10.1f} "
              f"{fmt(us.get('JAX'), '.1f'):>10} {fmt(us.get('PyTorch'), '.1f'):>10} "
              f"{fmt(us.get(HAND), '.1f'):>13} {fmt(r['c_over_best_peer'], '.2f'):>7} "
              f"{fmt(r['bpgen_numpy_over_hand_numpy'], '.2f'):>10} {r['gemm_bound_us']:>11.1f} "
              f"{r['c_fraction_of_gemm']:>7.2f} {r['build_c_s']:>9.1f} "
              f"{r['build_numpy_s']:>13.2f}{flag}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    ap.add_argument("--threads", metavar="N", help="every contender at N threads ('all': "
                    "the cores this process may use; the defaults-against-defaults run), "
                    "not pinned (default: pinned to one CPU, 1 thread)")
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    every = list(CASES) + list(SECOND_ORDER) + per_sample.names() + torch_step.names()
    ap.add_argument("--cases", help="comma-separated case names (default: all): "
                    + ", ".join(every))
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--first-order-only", action="store_true",
                      help="only the loss_and_grad table")
    only.add_argument("--second-order-only", action="store_true",
                      help="only the hessian / hvp / hessian_diag table")
    only.add_argument("--per-sample-only", action="store_true",
                      help="only the per-sample table (norms, clipped gradient, memory)")
    only.add_argument("--torch-step-only", action="store_true",
                      help="only the PyTorch training step through bpgen.torch.module "
                           "against plain PyTorch")
    args = ap.parse_args()
    names = args.cases.split(",") if args.cases else every
    unknown = [c for c in names if c not in every]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; expected some of {', '.join(every)}")
    one = (args.first_order_only or args.second_order_only or args.per_sample_only
           or args.torch_step_only)
    first = [c for c in names if c in CASES] if not one or args.first_order_only else []
    second = ([c for c in names if c in SECOND_ORDER]
              if not one or args.second_order_only else [])
    persample = ([c for c in names if c in per_sample.names()]
                 if not one or args.per_sample_only else [])
    steps = ([c for c in names if c in torch_step.names()]
             if (not one or args.torch_step_only) and PEERS["PyTorch"][0] is not None else [])
    if not first and not second and not persample and not steps:
        ap.error("no case left to run")
    repeats = 3 if args.quick else 7

    for peer, (library, _) in PEERS.items():
        if library is None:
            print(f"note: {peer} is not installed, so its column is skipped")
    threads = THREADS or 1
    rates = {dtype: gemm_rate(dtype, repeats) for dtype in ("float64", "float32")} if first else {}
    blas, blas_version = bpgen_blas()
    blas_rates = {dtype: bpgen_blas_rate(dtype, repeats, threads)
                  for dtype in ("float64", "float32")}
    info = machine()
    where = (f"pinned to CPU {info['pinned_cpu']}, 1 thread" if THREADS is None
             else f"not pinned, {threads} thread{'s' if threads > 1 else ''} everywhere")
    gemm = (f"; NumPy's GEMM 1024^3 at {threads} thread{'s' if threads > 1 else ''}: "
            + ", ".join(f"{dtype} {rate / 1e9:.1f} GFLOP/s" for dtype, rate in rates.items())
            ) if rates else ""
    blas_text = (f"; bpgen C's BLAS: {blas} {blas_version}, GEMM 1024^3: " + ", ".join(
        f"{dtype} {fmt(rate and rate / 1e9, '.1f')} GFLOP/s" for dtype, rate in blas_rates.items())
        if blas else "; bpgen C's BLAS: none (every product inline)")
    print(f"{info['cpu']}, {info['cores']} cores ({where}), {info['date']}; python "
          f"{info['python']}, numpy {info['numpy']}, torch {info['torch'] or '-'}, jax "
          f"{info['jax'] or '-'}, bpgen {info['bpgen'] or '-'}{gemm}{blas_text}; "
          f"median of {repeats} repeats\n")

    results = {"machine": info, "repeats": repeats, "threads": threads,
               "pinned": THREADS is None,
               "gemm_gflops": {k: v / 1e9 for k, v in rates.items()},
               "bpgen_blas": {"name": blas, "version": blas_version,
                              "gemm_gflops": {k: v and v / 1e9 for k, v in blas_rates.items()}}}
    with tempfile.TemporaryDirectory(prefix="bpgen_run_") as tmp:
        if first:
            rows = [run_case(name, *CASES[name], tmp, repeats, rates) for name in first]
            print("\ntimes in us per loss_and_grad call; C/best = bpgen C / the faster of JAX "
                  "and PyTorch (< 1: C is faster);\nNumPy/hand = bpgen NumPy / hand NumPy "
                  "(> 1: the hand-written NumPy is faster; - where it is not written);\n"
                  "GEMM bnd = matrix-product FLOPs / GEMM rate; C frac = GEMM bnd / bpgen C "
                  "time\n")
            print_table(rows)
            wrapper = overhead(tmp, repeats)
            print(f"\nC wrapper per-call overhead, mlp_tiny, N=1: loss_and_grad "
                  f"{wrapper['loss_and_grad']:.1f} us, forward {wrapper['forward']:.1f} us")
            results.update(cases=rows, c_overhead_us=wrapper)
        tools = types.SimpleNamespace(build=build_timed, make_params=make_params,
                                      make_data=make_data, time_call=time_call)
        if second:
            if first:
                print()
            results["second_order"] = second_order.run_section(SECOND_ORDER, second, tmp,
                                                               repeats, tools)
        if persample:
            if first or second:
                print()
            results["per_sample"] = per_sample.run_section(
                persample, tmp, repeats, tools, memory=not args.cases or
                per_sample.MEMORY[0] in persample)
        if steps:
            if first or second or persample:
                print()
            results["torch_step"] = torch_step.run_section(steps, tmp, repeats, tools)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
