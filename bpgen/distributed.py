"""Full-dataset derivatives of a generated module on a Dask cluster.

x and y (and ``lengths``) are Dask arrays chunked along the samples (or
NumPy arrays, split into chunks of ``chunks`` samples).  Each chunk is one
task: a worker runs the generated module on it and returns the chunk's data
term (its mean, without l2) times the chunk's weight (its samples, or its
real (sample, step) pairs for a loss over every step).  The partial sums are
added in a fixed binary tree over the chunks in chunk order, divided by the
total weight on the client, and l2 is added once there.  So the result is
the full-batch mean, and the same bits for any number of workers.

Workers never receive a compiled object: each task carries the validated
architecture (a :class:`bpgen.spec.Spec`, plain data) and the client's
``ARCHITECTURE_HASH``; a worker builds the module once per process (the
generated file is kept under ``$BPGEN_CACHE_DIR/distributed`` keyed by the
architecture hash and bpgen's own source, the C extension by the compile
cache), and refuses the task when its module's hash differs from the
client's.  Parameters (and ``v``, ``V``) are scattered to the workers once
per call.

See docs/distributed.md.
"""
from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

__all__ = ["CLUSTER_CONFIG", "DEFAULT_CHUNK", "from_npy", "ggn_vp", "hessian_diag", "hmp", "hvp", "is_zarr",
           "load", "load_params", "local_cluster", "loss", "loss_and_grad", "module", "per_sample_grad_norms", "persist",
           "save_dataset", "smooth_density", "spectral_density", "spectrum"]

#: samples per chunk when x is a NumPy array
DEFAULT_CHUNK = 8192

#: Dask settings for a cluster whose workers spend their time in the
#: generated module: Dask's defaults sample every running task's stack every
#: 10 ms (the statistical profiler), measure the event loop every 20 ms (the
#: tick) and the process every 0.5 s (the system monitor), in every worker,
#: nanny and the scheduler.  Measured on an idle LocalCluster of 2 worker
#: processes: 34 ms of CPU per second in the client's process (scheduler,
#: nannies) and 28 ms in each worker with the defaults, 4 and 2-3 with
#: these; on 2 cores that is CPU the workers' chunks need
#: (docs/distributed.md, "Cluster settings").  Set them where the cluster
#: is created (``with dask.config.set(CLUSTER_CONFIG): LocalCluster(...)``,
#: or a scheduler's and workers' Dask configuration): :func:`local_cluster`,
#: ``bpgen spectrum`` and ``examples/newton_cg.py`` do for the clusters they
#: start.  The results are the same bits either way.
CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False,
                  "distributed.admin.tick.interval": "1s",
                  "distributed.admin.system-monitor.interval": "5s"}


def _dask():
    try:
        import dask.array as da
        import distributed
    except ImportError:
        raise ImportError("bpgen.distributed needs Dask's distributed and dask[array]: "
                          "pip install 'bpgen[distributed]'") from None
    return da, distributed


# --------------------------------------------------------------------------
# the module on a worker: rebuilt from the architecture, cached per process

_MODULES: dict = {}
_LOCK = threading.Lock()
_CODE_DIGEST: list = []


def _code_digest() -> str:
    """SHA-256 of bpgen's own source files: a generated file kept on disk is
    reused only by the same generator."""
    if not _CODE_DIGEST:
        root = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha256()
        for base, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for f in sorted(files):
                if f.endswith((".py", ".c", ".h", ".j2", ".tmpl")):
                    path = os.path.join(base, f)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as fh:
                        h.update(fh.read())
        _CODE_DIGEST.append(h.hexdigest())
    return _CODE_DIGEST[0]


def _cache_dir() -> str:
    return os.environ.get("BPGEN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "bpgen")


def worker_module(source, backend: str, expected_hash: str):
    """The module of the architecture ``source`` (a dict) in this process (built on first use), checked
    against the client's ``expected_hash``."""
    import json
    key = (json.dumps(source, sort_keys=True, default=repr), backend)
    mod = _MODULES.get(key)
    if mod is None:
        with _LOCK:
            mod = _MODULES.get(key)
            if mod is None:
                mod = _build_here(source, backend)
                _MODULES[key] = mod
    if mod.ARCHITECTURE_HASH != expected_hash:
        raise ValueError(f"architecture hash mismatch: the worker's module of {source.get('name')!r} "
                         f"has ARCHITECTURE_HASH {mod.ARCHITECTURE_HASH[:16]}..., the "
                         f"client's {expected_hash[:16]}... (a different bpgen or "
                         f"architecture on the worker); refused")
    return mod


def _build_here(spec, backend: str):
    from .api import build, import_module
    from .spec import load_spec
    spec = load_spec(spec)
    tag = hashlib.sha256(f"{spec!r}|{backend}|{_code_digest()}".encode()).hexdigest()[:20]
    out = os.path.join(_cache_dir(), "distributed", f"{spec.name}-{tag}")
    main = os.path.join(out, f"{spec.name}_{backend}.py")
    if os.path.exists(main):            # generated before by the same bpgen
        try:
            mod = import_module(main, f"{spec.name}_{backend}")
        except (ImportError, SyntaxError, OSError, ValueError):
            mod = None                  # a damaged file: build it again
        if mod is not None:
            return mod
    return build(spec, backend=backend, out_dir=out)


# --------------------------------------------------------------------------
# one chunk on a worker

def _l2_part(mod, kind, params, v):
    """The l2 term of ``kind`` (what the module adds once per batch)."""
    lam = float(mod._L2)
    keys = mod._L2_KEYS if lam else ()
    if kind == "loss":
        return 0.5 * lam * sum(float(np.sum(np.asarray(params[k], np.float64) ** 2))
                               for k in keys)
    if kind == "loss_and_grad":
        loss = 0.5 * lam * sum(float(np.sum(np.asarray(params[k], np.float64) ** 2))
                               for k in keys)
        return loss, {k: lam * np.asarray(params[k]) for k in keys}
    if kind in ("hvp", "ggn_vp"):
        return {k: lam * np.asarray(v[k]) for k in keys}
    if kind == "hessian_diag":
        return {k: np.full(mod.PARAM_SHAPES[k], lam, dtype=mod.DTYPE) for k in keys}
    if kind == "hmp":
        mask = mod.flatten({k: np.full(s, lam if k in keys else 0.0, dtype=mod.DTYPE)
                            for k, s in mod.PARAM_SHAPES.items()})
        return mask[:, None] * v
    raise AssertionError(kind)


def _weight(mod, x, lengths) -> int:
    """The chunk's share of the batch mean: samples, or real (sample, step)
    pairs when the loss reads every step."""
    n = len(x)
    if mod.SEQUENCE_OUTPUT and mod.LOSS_ALL_STEPS:
        if lengths is not None:
            return int(np.sum(np.asarray(lengths, dtype=np.int64)))
        return n * int(np.shape(x)[1])
    return n


def _chunk(task, params, v, x, y, lengths, index, lo, hi):
    """One chunk: (weight, weight × data term), or the per-sample norms."""
    spec, backend, expected_hash, kind, threads = task
    mod = worker_module(spec, backend, expected_hash)
    if threads is not None and hasattr(mod, "set_threads") and mod.get_threads() != threads:
        mod.set_threads(threads)
    kw = {} if lengths is None else {"lengths": lengths}
    fn = getattr(mod, kind)
    try:
        if kind in ("hvp", "hmp", "ggn_vp"):
            out = fn(params, x, y, v, **kw)
        else:
            out = fn(params, x, y, **kw)
        weight = _weight(mod, x, lengths)
    except ValueError as exc:
        raise ValueError(f"chunk {index} (samples [{lo}, {hi})): {exc}") from None
    if kind == "per_sample_grad_norms":
        real = int(np.sum(np.asarray(lengths, np.int64))) if lengths is not None else 0
        return out, len(x), real
    w = float(weight)
    if kind == "loss_and_grad":
        loss, grads = out
        r_loss, r_grads = _l2_part(mod, kind, params, v)
        grads = {k: w * (g - r_grads[k]) if k in r_grads else w * g for k, g in grads.items()}
        return weight, (w * (loss - r_loss), grads)
    r = _l2_part(mod, kind, params, v)
    if kind == "loss":
        return weight, w * (float(out) - r)
    if kind == "hmp":
        return weight, w * (out - r)
    return weight, {k: w * (g - r[k]) if k in r else w * g for k, g in out.items()}


def _add(a, b):
    """Two partial results, added entry by entry (a first)."""
    wa, sa = a
    wb, sb = b
    return wa + wb, _sum(sa, sb)


def _sum(a, b):
    if isinstance(a, tuple):
        return tuple(_sum(p, q) for p, q in zip(a, b))
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b


# --------------------------------------------------------------------------
# the client side

_SOURCES: dict = {}


def _source(arch) -> dict:
    """The architecture as the plain dict the workers validate and build (a
    Spec does not travel: it is rebuilt from this on each worker)."""
    import copy

    import yaml

    from .spec import Spec, load_spec
    if isinstance(arch, dict):
        source = copy.deepcopy(arch)
    elif isinstance(arch, Spec):
        if not (isinstance(arch.source, str) and os.path.isfile(arch.source)):
            raise ValueError("arch: a Spec not read from a file cannot be sent to the "
                             "workers; pass its YAML path or dict")
        source, spec = _source(arch.source), arch
        if load_spec(source) != spec:
            raise ValueError(f"arch: the Spec differs from its file {arch.source}")
        return source
    elif isinstance(arch, (str, os.PathLike)):
        # a file read before and unchanged since (same size and mtime) is not
        # parsed again: a solver calls these functions many times
        try:
            st = os.stat(arch)
            key = (os.path.abspath(os.fspath(arch)), st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is not None and key in _SOURCES:
            return copy.deepcopy(_SOURCES[key])
        load_spec(arch)                  # the file's own errors first
        from .spec import MAX_YAML_DEPTH, _short
        from .yamlfile import hardened_loader
        with open(os.fspath(arch), encoding="utf-8") as fh:
            source = yaml.load(fh.read(), Loader=hardened_loader(MAX_YAML_DEPTH, _short))
        if key is not None:
            _SOURCES[key] = copy.deepcopy(source)
    elif hasattr(arch, "ARCHITECTURE_HASH"):
        raise ValueError("arch: expected the architecture (a YAML path, a dict or a Spec), "
                         "not a built module: the workers rebuild the module from it")
    else:
        raise ValueError(f"arch: expected a YAML path, a dict or a Spec, "
                         f"got {type(arch).__name__}")
    return source


class _Plan:
    """The architecture, the client's module and the cluster of one call."""

    def __init__(self, arch, backend, client, threads):
        _dask()                     # the extra's own message when it is missing
        from .spec import load_spec
        self.source = _source(arch)
        self.spec = load_spec(self.source)
        if backend not in ("numpy", "c"):
            raise ValueError(f"backend: expected 'numpy' or 'c', got {backend!r}")
        self.backend = backend
        self.mod = _client_module(self.spec, backend)
        self.hash = self.mod.ARCHITECTURE_HASH
        self.client = _default_client(client)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or threads < 1):
            raise ValueError(f"threads: expected a positive integer or None, got {threads!r}")
        self.threads = threads

    def task(self, kind):
        return (self.source, self.backend, self.hash, kind, self.threads)

    def scatter(self, value):
        """One future holding ``value``, on every worker (once per call).  A
        worker that has just died (and that the scheduler still lists) makes
        the broadcast fail: it is tried again, for ~10 s, while the scheduler
        removes the worker and the nanny starts another."""
        import time
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.client.scatter([value], broadcast=True, hash=False)[0]
            except OSError:              # CommClosedError: a worker gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _checked(mod, params, what):
    """``params`` (or ``v``) as the module's arrays; a ValueError naming the
    key, before any work is sent."""
    given = params.keys() if isinstance(params, dict) else None
    if given is None:
        raise ValueError(f"{what}: expected a dict keyed like PARAM_SHAPES, "
                         f"got {type(params).__name__}")
    missing = [k for k in mod.PARAM_SHAPES if k not in params]
    extra = [k for k in given if k not in mod.PARAM_SHAPES]
    if missing or extra:
        raise ValueError(f"{what}: " + "; ".join(
            ([f"missing {', '.join(map(repr, missing))}"] if missing else [])
            + ([f"unknown {', '.join(map(repr, extra))}"] if extra else [])))
    out = {}
    for k, shape in mod.PARAM_SHAPES.items():
        arr = np.asarray(params[k])
        if arr.shape != tuple(shape):
            raise ValueError(f"{what}[{k!r}]: expected shape {tuple(shape)}, got {arr.shape}")
        if not np.can_cast(arr.dtype, mod.DTYPE, "safe"):
            raise ValueError(f"{what}[{k!r}]: dtype {arr.dtype} cannot be cast safely to "
                             f"{mod.DTYPE} (convert it explicitly)")
        out[k] = np.ascontiguousarray(arr, dtype=mod.DTYPE)
    return out


_CLIENT_MODULES: dict = {}


def _client_module(spec, backend):
    key = (repr(spec), backend)
    if key not in _CLIENT_MODULES:
        _CLIENT_MODULES[key] = _build_here(spec, backend)
    return _CLIENT_MODULES[key]


def module(arch, backend: str = "c"):
    """The client's module of ``arch`` (a YAML path, a dict or a Spec): the
    one the workers build, for ``init_params``, ``flatten``, ... ."""
    from .spec import load_spec
    if backend not in ("numpy", "c"):
        raise ValueError(f"backend: expected 'numpy' or 'c', got {backend!r}")
    return _client_module(load_spec(_source(arch)), backend)


def _as_dask(name, a, n_chunks):
    da, _ = _dask()
    if a is None:
        return None
    if isinstance(a, da.Array):
        return a
    a = np.asarray(a)
    return da.from_array(a, chunks=(n_chunks,) + a.shape[1:])


def _blocks(x, y, lengths, chunks, client=None):
    """x, y, lengths as lists of delayed blocks over the same sample ranges,
    and the ranges.  NumPy inputs (all three) are sliced on the client, each
    chunk its own literal in the task graph."""
    da, _ = _dask()
    if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool)
                               or chunks < 1):
        raise ValueError(f"chunks: expected a positive number of samples, got {chunks!r}")
    size = chunks or DEFAULT_CHUNK
    if client is not None and not any(isinstance(a, da.Array) for a in (x, y, lengths)):
        return _embedded(x, y, lengths, size)
    x, y, lengths = _aligned(x, y, lengths, chunks)
    xb = x.to_delayed().ravel().tolist()
    yb = y.to_delayed().ravel().tolist()
    lb = lengths.to_delayed().ravel().tolist() if lengths is not None else [None] * len(xb)
    starts = np.concatenate([[0], np.cumsum(x.chunks[0])]).tolist()
    return _Data(xb, yb, lb, [(int(starts[i]), int(starts[i + 1]))
                              for i in range(len(x.chunks[0]))])


def _aligned(x, y, lengths, chunks):
    """x, y, lengths as Dask arrays with the same chunks along the samples
    (``chunks`` samples each when given) and one chunk along every other
    axis."""
    size = chunks or DEFAULT_CHUNK
    x = _as_dask("x", x, size)
    y = _as_dask("y", y, size)
    lengths = _as_dask("lengths", lengths, size)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected at least one sample, got shape {x.shape}")
    if chunks is not None and len(x.chunks[0]):
        x = x.rechunk({0: size})
    n = x.shape[0]
    for name, a in (("y", y), ("lengths", lengths)):
        if a is not None and (a.ndim < 1 or a.shape[0] != n):
            raise ValueError(f"{name}: expected {n} rows (x has {n} samples), "
                             f"got shape {a.shape}")
    rows = x.chunks[0]
    return tuple(None if a is None else a.rechunk((rows,) + tuple(-1 for _ in a.shape[1:]))
                 for a in (x, y, lengths))


def _block(a):
    return a


def _embedded(x, y, lengths, size):
    """NumPy inputs: each chunk a literal of its own task in the graph, so a
    worker that dies loses nothing the scheduler cannot run again (a
    scattered chunk would be lost with it); the client slices, never copies
    the whole array to one worker."""
    import dask
    x, y = np.asarray(x), np.asarray(y)
    lengths = None if lengths is None else np.asarray(lengths)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected at least one sample, got shape {x.shape}")
    n = x.shape[0]
    for name, a in (("y", y), ("lengths", lengths)):
        if a is not None and (a.ndim < 1 or a.shape[0] != n):
            raise ValueError(f"{name}: expected {n} rows (x has {n} samples), "
                             f"got shape {a.shape}")
    ranges = [(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def blocks(a):
        return [dask.delayed(_block, pure=True)(np.ascontiguousarray(a[lo:hi]))
                for lo, hi in ranges]
    lb = blocks(lengths) if lengths is not None else [None] * len(ranges)
    return _Data(blocks(x), blocks(y), lb, ranges)


class _Data(tuple):
    """(x blocks, y blocks, lengths blocks, sample ranges): the chunks of a call."""

    def __new__(cls, xb, yb, lb, ranges):
        return super().__new__(cls, (xb, yb, lb, ranges))


def _leaves(plan, kind, pf, vf, data):
    import dask
    xb, yb, lb, ranges = data
    task = plan.task(kind)
    return [dask.delayed(_chunk, pure=True)(task, pf, vf, xb[i], yb[i], lb[i], i, lo, hi)
            for i, (lo, hi) in enumerate(ranges)]


def _node(level, j, n, leaf):
    """Node j of level ``level`` of the fixed binary tree over the n chunks in
    chunk order ((0+1), (2+3), ... level by level, an odd last node moving
    up unchanged): the sum of chunks [j·2^level, min((j+1)·2^level, n)),
    its left child plus its right one when that holds a chunk; ``leaf(i)``
    is chunk i's result.  At most one partial sum per level is held at a
    time."""
    if level == 0:
        return leaf(j)
    left = _node(level - 1, 2 * j, n, leaf)
    if (2 * j + 1) << (level - 1) < n:
        return _add(left, _node(level - 1, 2 * j + 1, n, leaf))
    return left


def _group(task, pf, vf, level, j, n, xs, ys, ls, ranges):
    """One task for a whole node of the tree whose chunks one worker holds:
    its chunks one after the other, added in the tree's order (the same
    bits as a task per chunk and one per addition)."""
    first = j << level

    def leaf(i):
        k = i - first
        lo, hi = ranges[k]
        return _chunk(task, pf, vf, xs[k], ys[k], ls[k], i, lo, hi)
    return _node(level, j, n, leaf)


def _holders(client, blocks):
    """For each block (a Delayed of one key), the workers holding it in
    memory (a frozenset), or None when some block is held by none (not
    persisted: the scheduler places its reading)."""
    keys = [getattr(b, "key", None) for b in blocks]
    if not keys or any(k is None for k in keys):
        return None
    try:
        who = client.sync(client.scheduler.who_has, keys=keys)
    except Exception:                    # no answer: the per-chunk graph
        return None
    held = [frozenset(who.get(k) or ()) for k in keys]
    return held if all(held) else None


def _root(plan, kind, pf, vf, data):
    """The tree's root over the chunks as a graph.  The tree is fixed by the
    chunks' order (:func:`_node`); how it is cut into tasks
    depends on where x's chunks are held: a node whose chunks one worker
    holds in memory (persisted, e.g. by :func:`persist`) is one task on
    that worker (:func:`_group`), any other node an addition of its two
    children, every chunk not held a task of its own.  The same bits
    however the tree is cut.  A node's task is pinned to the workers that
    hold its chunks (strict restrictions): Dask's work stealing would
    otherwise move a whole subtree, and its data (up to half the data set),
    to an idle worker (measured at 10^6 samples: 1.3-2.4 GB copied per
    worker, the speed-up 1.33x instead of 1.74x).  Returns the graph and
    the workers its tasks are pinned to (see :func:`_result`)."""
    import dask
    xb, yb, lb, ranges = data
    n = len(ranges)
    held = _holders(plan.client, xb) if n > 1 else None
    task = plan.task(kind)
    pinned = set()

    def node(level, j):
        lo, hi = j << level, min((j + 1) << level, n)
        if level == 0:
            return dask.delayed(_chunk, pure=True)(task, pf, vf, xb[lo], yb[lo], lb[lo], lo,
                                                   *ranges[lo])
        common = frozenset.intersection(*held[lo:hi]) if held is not None else None
        if common:
            pinned.update(common)
            with dask.annotate(workers=sorted(common), allow_other_workers=False):
                return dask.delayed(_group, pure=True)(task, pf, vf, level, j, n, xb[lo:hi],
                                                       yb[lo:hi], lb[lo:hi], ranges[lo:hi])
        left = node(level - 1, 2 * j)
        if (2 * j + 1) << (level - 1) < n:
            return dask.delayed(_add, pure=True)(left, node(level - 1, 2 * j + 1))
        return left
    return node(max(0, (n - 1).bit_length()), 0), frozenset(pinned)


def _result(client, fut, pinned, poll=0.5):
    """fut's result, or None when a worker some of its tasks are pinned to
    has left the cluster (killed, retired): those tasks could never run, so
    the caller cancels and builds the graph again from where the chunks are
    now (Dask recomputes a lost chunk from its lineage elsewhere)."""
    if not pinned:
        return fut.result()
    while True:
        try:
            return fut.result(timeout=poll)
        except TimeoutError:
            pass
        except Exception as e:          # distributed's own TimeoutError
            if type(e).__name__ != "TimeoutError":
                raise
        if not pinned <= set(client.nthreads()):
            return None


def _submit(client, graph):
    """client.compute, without Dask's warning about a large graph: NumPy
    inputs travel in it on purpose (see _embedded)."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph")
        return client.compute(graph)


def _place(client, data):
    """The chunks of ``data`` (a :class:`_Data`) persisted so that each worker
    holds one run of consecutive chunks (x's, y's and lengths' of a chunk
    together), the runs balanced by samples: whole nodes of the reduction
    tree then lie on one worker and run as one task each (:func:`_root`).
    Dask's own ``persist`` spreads the chunks as they are computed, usually
    alternating between workers, and a pass then runs a task per chunk and
    per addition.  Each run is computed under a strict restriction to its
    worker: a loose one lets Dask's work stealing compute chunks on the
    other worker when one runs ahead (seen at load 8: x's first chunk, and
    y's small chunks by the dozen).  Once the chunks are in memory the
    restrictions of every task of their graphs are lifted, so a chunk
    lost with its worker is recomputed anywhere; a worker that leaves while
    the chunks are computed lifts them at once.  Returns when the chunks
    are in memory."""
    import warnings
    xb, yb, lb, ranges = data
    workers = sorted(client.nthreads())
    if not workers:
        raise ValueError("client: the cluster has no workers")
    total = ranges[-1][1] - ranges[0][0]
    runs = [[] for _ in workers]
    for i, (lo, _) in enumerate(ranges):
        runs[min(len(workers) - 1, (lo - ranges[0][0]) * len(workers) // total)].append(i)
    cols = (xb, yb) + ((lb,) if any(b is not None for b in lb) else ())
    out = [list(xb), list(yb), list(lb)]
    keys = set()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph")
        for addr, run in zip(workers, runs):
            if not run:
                continue
            where = [(c, i) for i in run for c in range(len(cols))]     # a chunk's together
            blocks = [cols[c][i] for c, i in where]
            for b in blocks:
                keys.update(b.__dask_graph__().keys())
            done = client.persist(blocks, workers=[addr], allow_other_workers=False)
            for (c, i), b in zip(where, done):
                out[c][i] = b
    futures = [f for col in out[:len(cols)] for b in col for f in client.futures_of(b)]
    try:
        _wait_placed(client, futures, set(workers), keys)
    finally:
        _unrestricted(client, keys)
    return _Data(out[0], out[1], out[2], ranges)


def _wait_placed(client, futures, workers, keys, poll=0.5):
    """Until ``futures`` are in memory; when one of ``workers`` leaves
    meanwhile, the tasks restricted to it could never run: the restrictions
    are lifted (:func:`_unrestricted`) and the rest computed anywhere."""
    _, distributed = _dask()
    while True:
        try:
            distributed.wait(futures, timeout=poll)
            return
        except Exception as e:          # TimeoutError (builtin or distributed's)
            if "TimeoutError" not in type(e).__name__:
                raise
        if not workers <= set(client.nthreads()):
            _unrestricted(client, keys)
            distributed.wait(futures)
            return


def _unrestricted(client, keys):
    """The worker restrictions of the scheduler's tasks ``keys`` removed
    (keys the scheduler does not hold, e.g. fused away, are skipped)."""
    state = client.sync(client.scheduler.get_task_status, keys=list(keys))
    known = {k: None for k, st in state.items() if st is not None}
    if known:
        client.sync(client.scheduler.set_restrictions, worker=known)


def local_cluster(n_workers: int = 2, **kwargs):
    """A ``distributed.LocalCluster`` of ``n_workers`` worker processes of
    one thread each (the workers are the parallelism: the module runs one
    thread on each), created under :data:`CLUSTER_CONFIG`; ``kwargs`` go to
    LocalCluster (``dashboard_address`` defaults to a free port)."""
    import dask
    _, distributed = _dask()
    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise ValueError(f"n_workers: expected a positive integer, got {n_workers!r}")
    kwargs = {"threads_per_worker": 1, "processes": True, "dashboard_address": ":0", **kwargs}
    with dask.config.set(CLUSTER_CONFIG):
        return distributed.LocalCluster(n_workers=n_workers, **kwargs)


def _default_client(client):
    """``client``, or the current Dask client (a ValueError naming
    ``client`` when there is none)."""
    if client is not None:
        return client
    _, distributed = _dask()
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError("client: no Dask client: pass client=, or start one "
                         "(distributed.Client(LocalCluster(...)))") from None


def persist(x, y, lengths=None, *, client=None, chunks=None):
    """x, y (and ``lengths``) kept in the workers' memory, as Dask arrays
    chunked along the samples (``chunks`` samples per chunk, default: their
    chunks; NumPy arrays: DEFAULT_CHUNK), each worker holding one run of
    consecutive chunks, the runs balanced by samples.  A pass over data
    placed so runs as a few tasks per worker (each a whole subtree of the
    reduction, computed in one go), instead of a task per chunk and per
    addition as over data Dask's ``client.persist`` spreads; the result is
    the same bits either way.  Returns ``(x, y, lengths)`` (lengths None
    when not given) once the chunks are in the workers' memory.  Chunks
    already in the cluster's memory (an array persisted before) stay where
    they are: place the data when it is first read or generated."""
    _dask()
    client = _default_client(client)
    if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool)
                               or chunks < 1):
        raise ValueError(f"chunks: expected a positive number of samples, got {chunks!r}")
    arrays = _aligned(x, y, lengths, chunks)
    placed = _place(client, _blocks(*arrays, chunks=None))
    out = []
    for a, blocks in zip(arrays, placed[:3]):
        if a is None:
            out.append(None)
            continue
        futures = {}
        for b in blocks:
            futures.update({f.key: f for f in client.futures_of(b)})
        func, args = a.__dask_postpersist__()
        out.append(func({b.key: futures[b.key] for b in blocks}, *args))
    return tuple(out)


def _reduce(plan, kind, params, v, data, pf=None):
    own = pf is None
    if own:
        pf = plan.scatter(params)
    vf = plan.scatter(v) if v is not None else None
    try:
        while True:
            root, pinned = _root(plan, kind, pf, vf, data)
            fut = _submit(plan.client, root)
            try:
                got = _result(plan.client, fut, pinned)
            finally:
                fut.release()
            if got is not None:
                weight, total = got
                break
    finally:
        if own:
            pf.release()
        if vf is not None:
            vf.release()
    return weight, total


def _finish(plan, kind, params, v, weight, total):
    mod = plan.mod
    r = _l2_part(mod, kind, params, v)
    if kind == "loss_and_grad":
        s_loss, s_grads = total
        r_loss, r_grads = r
        grads = {k: (g / weight + r_grads[k]) if k in r_grads else g / weight
                 for k, g in s_grads.items()}
        return float(s_loss / weight + r_loss), {k: np.ascontiguousarray(g, mod.DTYPE)
                                                  for k, g in grads.items()}
    if kind == "loss":
        return float(total / weight + r)
    if kind == "hmp":
        return np.ascontiguousarray(total / weight + r, dtype=mod.DTYPE)
    return {k: np.ascontiguousarray((g / weight + r[k]) if k in r else g / weight,
                                    dtype=mod.DTYPE) for k, g in total.items()}


def _run(kind, arch, params, x, y, v=None, lengths=None, *, client=None, backend="c",
         chunks=None, threads=1, plan=None, pf=None):
    plan = plan or _Plan(arch, backend, client, threads)
    if pf is None:
        params = _checked(plan.mod, params, "params")
    if kind in ("hvp", "ggn_vp"):
        v = _checked(plan.mod, v, "v")
    elif kind == "hmp":
        v = np.asarray(v)
        if v.ndim != 2 or v.shape[0] != plan.mod.N_PARAMS:
            raise ValueError(f"V: expected shape (N_PARAMS = {plan.mod.N_PARAMS}, k), "
                             f"got {v.shape}")
        v = np.ascontiguousarray(v, dtype=plan.mod.DTYPE)
    data = x if isinstance(x, _Data) else _blocks(x, y, lengths, chunks, plan.client)
    weight, total = _reduce(plan, kind, params, v, data, pf)
    return _finish(plan, kind, params, v, weight, total)


def loss(arch, params, x, y, lengths=None, *, client=None, backend="c", chunks=None,
         threads=1):
    """The loss over the whole data set, as the module's ``loss`` over one
    batch of all of it (the forward pass only: a line search's probe)."""
    return _run("loss", arch, params, x, y, None, lengths, client=client, backend=backend,
                chunks=chunks, threads=threads)


def loss_and_grad(arch, params, x, y, lengths=None, *, client=None, backend="c",
                  chunks=None, threads=1):
    """``(loss, grads)`` over the whole data set, as the module's
    ``loss_and_grad`` over one batch of all of it.  ``arch``: a YAML path, a
    dict or a Spec.  x, y, lengths: Dask arrays chunked along the samples, or
    NumPy arrays (split into ``chunks`` samples, default DEFAULT_CHUNK; with a
    Dask array ``chunks`` rechunks it).  ``client``: the Dask client (default:
    the current one).  ``threads``: the C module's threads on each worker
    (1: the cluster's workers are the parallelism)."""
    return _run("loss_and_grad", arch, params, x, y, None, lengths, client=client,
                backend=backend, chunks=chunks, threads=threads)


def hvp(arch, params, x, y, v, lengths=None, *, client=None, backend="c", chunks=None,
        threads=1):
    """The exact Hessian of the full-data loss times ``v`` (a dict like params)."""
    return _run("hvp", arch, params, x, y, v, lengths, client=client, backend=backend,
                chunks=chunks, threads=threads)


def hmp(arch, params, x, y, V, lengths=None, *, client=None, backend="c", chunks=None,
        threads=1):
    """The exact Hessian of the full-data loss times V, (N_PARAMS, k)."""
    return _run("hmp", arch, params, x, y, V, lengths, client=client, backend=backend,
                chunks=chunks, threads=threads)


def ggn_vp(arch, params, x, y, v, lengths=None, *, client=None, backend="c", chunks=None,
           threads=1):
    """The generalised Gauss-Newton product of the full-data loss."""
    return _run("ggn_vp", arch, params, x, y, v, lengths, client=client, backend=backend,
                chunks=chunks, threads=threads)


def hessian_diag(arch, params, x, y, lengths=None, *, client=None, backend="c",
                 chunks=None, threads=1):
    """The diagonal of the exact Hessian of the full-data loss."""
    return _run("hessian_diag", arch, params, x, y, None, lengths, client=client,
                backend=backend, chunks=chunks, threads=threads)


def per_sample_grad_norms(arch, params, x, y, lengths=None, *, client=None, backend="c",
                          chunks=None, threads=1):
    """Each sample's gradient norm, as the module's ``per_sample_grad_norms``
    over one batch of all of it: an (N,) NumPy array gathered on the client
    in sample order (with ``lengths`` and ``steps: all`` a sample's term
    weighs N·L_n/ΣL over the whole data set, so each chunk's norms are
    rescaled from its own N_c·L_n/ΣL_c)."""
    plan = _Plan(arch, backend, client, threads)
    params = _checked(plan.mod, params, "params")
    data = _blocks(x, y, lengths, chunks, plan.client)
    pf = plan.scatter(params)
    futs = _submit(plan.client, _leaves(plan, "per_sample_grad_norms", pf, None, data))
    try:
        parts = plan.client.gather(futs)
    finally:
        for f in futs:
            f.release()
        pf.release()
    norms = [p[0] for p in parts]
    mod = plan.mod
    if lengths is not None and mod.SEQUENCE_OUTPUT and mod.LOSS_ALL_STEPS:
        n = sum(p[1] for p in parts)
        real = sum(p[2] for p in parts)
        norms = [nc * ((n / real) * (rc / cnt)) for nc, (_, cnt, rc) in zip(norms, parts)]
    return np.ascontiguousarray(np.concatenate(norms), dtype=mod.DTYPE)


# --------------------------------------------------------------------------
# the spectrum: bpgen.curvature.spectrum on a distributed hvp

class _DistributedOperator:
    """What :func:`bpgen.curvature.spectrum` reads of a module, with ``hvp``
    (and ``hessian``, as hmp of the identity) over the whole data set."""

    def __init__(self, plan, data):
        mod = plan.mod
        self.N_PARAMS = mod.N_PARAMS
        self.DTYPE = mod.DTYPE
        self.flatten = mod.flatten
        self.unflatten = mod.unflatten
        self._plan = plan
        self._data = data
        self.products = 0
        self._pf = None

    def hvp(self, params, x, y, v):
        self.products += 1
        if self._pf is None:            # the parameters go to the workers once
            self._pf = self._plan.scatter(params)
        return _run("hvp", None, params, self._data, None, v, plan=self._plan, pf=self._pf)

    def hessian(self, params, x, y, progress=None):
        eye = np.eye(self.N_PARAMS, dtype=self.DTYPE)
        return _run("hmp", None, params, self._data, None, eye, plan=self._plan)

    def release(self):
        if self._pf is not None:
            self._pf.release()
            self._pf = None


def spectrum(arch, params, x, y, k: int = 6, lengths=None, *, smallest: bool = False,
             full=None, tol: float = 0.0, client=None, backend: str = "c", chunks=None,
             threads=1, persist: bool = True, progress=None) -> dict:
    """The top-k eigenvalues of the exact full-data Hessian (and the k
    smallest with ``smallest``): :func:`bpgen.curvature.spectrum` (Lanczos,
    SciPy's ``eigsh``, for more than FULL_LIMIT parameters; the full
    eigendecomposition of hmp(identity) below) on the distributed ``hvp``.
    ``persist``: keep x, y on the workers' memory across the Lanczos products
    (False: read each chunk from its source at every product)."""
    from .curvature import spectrum as _spectrum
    plan = _Plan(arch, backend, client, threads)
    params = _checked(plan.mod, params, "params")
    data = _blocks(x, y, lengths, chunks, plan.client)
    if persist:                          # x, y kept in the workers' memory
        data = _place(plan.client, data)
    op = _DistributedOperator(plan, data)
    try:
        return _spectrum(op, params, None, None, k=k, smallest=smallest, full=full, tol=tol,
                         progress=progress)
    finally:
        op.release()


def _slq_probe(matvec, v, steps):
    """Lanczos from v (full reorthogonalisation): the Gauss quadrature nodes
    (eigenvalues of the tridiagonal matrix) and weights (their eigenvectors'
    first components squared) of v's spectral measure."""
    q = v / np.linalg.norm(v)
    basis, alphas, betas = [q], [], []
    for j in range(steps):
        w = matvec(basis[-1])
        alpha = float(basis[-1] @ w)
        alphas.append(alpha)
        for b in basis:                          # twice is enough (Kahan)
            w = w - (b @ w) * b
        for b in basis:
            w = w - (b @ w) * b
        beta = float(np.linalg.norm(w))
        if j == steps - 1 or beta <= 1e-12 * max(abs(a) for a in alphas):
            break
        betas.append(beta)
        basis.append(w / beta)
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    nodes, vecs = np.linalg.eigh(t)
    return nodes, vecs[0] ** 2


def spectral_density(arch, params, x, y, lengths=None, *, probes: int = 8, steps: int = 60,
                     seed: int = 0, client=None, backend: str = "c", chunks=None, threads=1,
                     persist: bool = True) -> dict:
    """The Hessian's spectral density by stochastic Lanczos quadrature
    (Ghorbani et al. 2019, as PyHessian): ``probes`` Rademacher vectors
    (seeded), ``steps`` Lanczos steps each on the distributed ``hvp``.
    Returns {"nodes": (probes, m) eigenvalue estimates, "weights": their
    quadrature weights (each row sums to 1), "products"}; the density is
    the mean over probes of Σ_j weights[j]·δ(λ − nodes[j]) (smooth it with
    :func:`smooth_density`).  A row ends early (nodes padded with NaN,
    weights with 0) when its Krylov space is exhausted."""
    for name, value in (("probes", probes), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    plan = _Plan(arch, backend, client, threads)
    params = _checked(plan.mod, params, "params")
    data = _blocks(x, y, lengths, chunks, plan.client)
    if persist:
        data = _place(plan.client, data)
    op = _DistributedOperator(plan, data)
    mod = plan.mod
    steps = min(steps, mod.N_PARAMS)

    def matvec(v):
        out = op.hvp(params, None, None, mod.unflatten(v.astype(mod.DTYPE)))
        return mod.flatten(out).astype(np.float64)

    rng = np.random.default_rng(seed)
    nodes = np.full((probes, steps), np.nan)
    weights = np.zeros((probes, steps))
    try:
        for i in range(probes):
            v = rng.choice([-1.0, 1.0], size=mod.N_PARAMS)
            t, w = _slq_probe(matvec, v, steps)
            nodes[i, :len(t)], weights[i, :len(w)] = t, w
    finally:
        op.release()
    return {"nodes": nodes, "weights": weights, "products": op.products}


def smooth_density(result: dict, grid, sigma: float):
    """The density of :func:`spectral_density`'s result on ``grid``, each node
    a Gaussian of width ``sigma`` (integrates to 1 over the real line)."""
    grid = np.asarray(grid, dtype=np.float64)
    nodes, weights = result["nodes"], result["weights"]
    ok = ~np.isnan(nodes)
    z = (grid[:, None] - nodes[ok][None, :]) / sigma
    g = np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
    return g @ weights[ok] / nodes.shape[0]


# --------------------------------------------------------------------------
# data on disk

def load(path, chunks=None):
    """``{"x", "y", "lengths" (or None)}`` as Dask arrays from a Zarr store (a
    group with arrays x, y and optionally lengths: read chunk by chunk on the
    workers) or an .npz file (read whole on the client, then split: for data
    that fits in the client's memory).  ``chunks``: samples per chunk
    (default: the Zarr chunks; DEFAULT_CHUNK for .npz)."""
    da, _ = _dask()
    p = os.fspath(path)
    if p.endswith(".npz"):
        with np.load(p, allow_pickle=False) as f:
            for key in ("x", "y"):
                if key not in f.files:
                    raise ValueError(f"path: {p} has no array {key!r} (it needs x and y)")
            arrays = {k: f[k] for k in ("x", "y", "lengths") if k in f.files}
        size = chunks or DEFAULT_CHUNK
        out = {k: da.from_array(a, chunks=(size,) + a.shape[1:]) for k, a in arrays.items()}
    elif is_zarr(p):
        group = _open_group(p)
        names = set(group.array_keys())
        for key in ("x", "y"):
            if key not in names:
                raise ValueError(f"path: {p} has no array {key!r} (it needs x and y)")
        out = {k: da.from_zarr(p, component=k) for k in ("x", "y", "lengths") if k in names}
        if chunks:
            out = {k: a.rechunk({0: chunks}) for k, a in out.items()}
    else:
        raise ValueError(f"path: expected a Zarr store (a directory, e.g. data.zarr) or an "
                         f".npz file, got {p}")
    out.setdefault("lengths", None)
    return out


def is_zarr(path) -> bool:
    """Whether ``path`` names a Zarr store: a name ending in ``.zarr``, or a
    directory holding Zarr metadata (``zarr.json``, ``.zgroup``)."""
    p = os.fspath(path)
    return p.rstrip("/").endswith(".zarr") or any(
        os.path.isfile(os.path.join(p, meta)) for meta in ("zarr.json", ".zgroup"))


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("reading and writing Zarr needs zarr: pip install zarr") from None
    return zarr


def _open_group(p):
    zarr = _zarr()
    try:
        return zarr.open_group(p, mode="r")
    except (OSError, ValueError, KeyError) as exc:     # no store, no group, ...
        raise ValueError(f"path: cannot open {p} as a Zarr group: {exc}") from None


#: the prefix of the metadata attributes of a store's ``params`` group: the
#: entries a module's ``save_params`` writes next to the arrays of its .npz
_META = "bpgen:"


def save_dataset(path, x, y, lengths=None, *, params=None, arch=None, chunks=None):
    """Write x, y (and ``lengths``) as the Zarr store :func:`load` reads: a
    group with arrays ``x``, ``y`` (``lengths``) chunked along the samples,
    ``chunks`` samples per chunk (default: a Dask array's first chunk, else
    DEFAULT_CHUNK).  With ``params`` (a dict keyed like PARAM_SHAPES; needs
    ``arch``, whose module checks it), also a group ``params``: one array
    per parameter key, and in the group's attributes ``bpgen:architecture_hash``,
    ``bpgen:dtype``, ``bpgen:architecture`` and ``bpgen:format``, what a
    module's ``save_params`` writes into its .npz, so :func:`load_params` (and
    ``bpgen spectrum --data``) refuse them for another architecture.

    x, y, lengths: NumPy arrays, or Dask arrays (written chunk by chunk by the
    current scheduler, never gathered on the client).  ``path`` must not
    exist: the store is written under a temporary name next to it and
    renamed when complete, so no half-written store is left under ``path``."""
    import json
    import shutil
    import tempfile
    da, _ = _dask()
    zarr = _zarr()
    p = os.fspath(path).rstrip("/")
    if os.path.lexists(p):
        raise ValueError(f"path: {p} exists; save_dataset writes a new store "
                         f"(remove it first, or choose another name)")
    if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool)
                               or chunks < 1):
        raise ValueError(f"chunks: expected a positive number of samples, got {chunks!r}")
    arrays = {"x": x, "y": y, "lengths": lengths}
    arrays = {k: (a if isinstance(a, da.Array) else np.asarray(a))
              for k, a in arrays.items() if a is not None}
    n = arrays["x"].shape[0] if arrays["x"].ndim else 0
    if n < 1:
        raise ValueError(f"x: expected at least one sample, got shape {arrays['x'].shape}")
    for k in ("y", "lengths"):
        if k in arrays and (arrays[k].ndim < 1 or arrays[k].shape[0] != n):
            raise ValueError(f"{k}: expected {n} rows (x has {n} samples), got shape "
                             f"{arrays[k].shape}")
    if chunks is None:
        chunks = (arrays["x"].chunks[0][0] if isinstance(arrays["x"], da.Array)
                  else DEFAULT_CHUNK)
    size = min(chunks, n)
    stored = None
    if params is not None:
        if arch is None:
            raise ValueError("arch: save_dataset needs the architecture with params= (its "
                             "module checks them, and its hash is stored with them)")
        mod = module(arch, "numpy")
        stored = _checked(mod, params, "params")
        meta = {_META + "architecture_hash": mod.ARCHITECTURE_HASH,
                _META + "dtype": mod.DTYPE.name,
                _META + "architecture": json.dumps(mod._unnamed(), sort_keys=True),
                _META + "format": 1}
    parent = os.path.dirname(os.path.abspath(p))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(p)}.partial-", dir=parent)
    try:
        group = zarr.open_group(tmp, mode="w")
        for k, a in arrays.items():
            shape = tuple(a.shape)
            target = group.create_array(k, shape=shape, dtype=a.dtype,
                                        chunks=(size,) + shape[1:])
            if isinstance(a, da.Array):
                da.store(a.rechunk((size,) + shape[1:]), target, lock=False)
            else:
                for lo in range(0, n, size):
                    target[lo:lo + size] = a[lo:lo + size]
        if stored is not None:
            pg = group.create_group("params")
            for k, a in stored.items():
                pg.create_array(k, shape=a.shape, dtype=a.dtype,
                                chunks=a.shape or None)[...] = a
            pg.attrs.update(meta)
        os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_params(path, arch, backend: str = "c"):
    """The parameters :func:`save_dataset` stored in the Zarr store ``path``
    (its group ``params``), checked as a module's ``load_params`` checks a
    file ``save_params`` wrote: the keys, shapes, dtype and architecture hash
    (another architecture's are a ValueError naming what differs).  None
    when the store holds no ``params`` group.  ``arch``: the architecture (a
    YAML path, a dict or a Spec), or a module built from it."""
    import tempfile
    p = os.fspath(path).rstrip("/")
    group = _open_group(p)
    if "params" not in set(group.group_keys()):
        return None
    pg = group["params"]
    where = f"{p} (group params)"
    attrs = dict(pg.attrs)
    if _META + "architecture_hash" not in attrs:
        raise ValueError(f"path: {where} has no {_META}architecture_hash attribute: "
                         f"it was not written by bpgen.distributed.save_dataset(..., "
                         f"params=, arch=)")
    arrays = {k: np.asarray(pg[k][...]) for k in pg.array_keys()}
    arrays.update({k: np.array(v) for k, v in attrs.items() if k.startswith(_META)})
    mod = arch if hasattr(arch, "ARCHITECTURE_HASH") else module(arch, backend)
    # the module's own load_params checks them (one set of rules and messages)
    fd, tmp = tempfile.mkstemp(prefix="bpgen-params-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        try:
            return mod.load_params(tmp)
        except ValueError as exc:
            raise ValueError(str(exc).replace(tmp, where)) from None
    finally:
        os.unlink(tmp)


def _npy_block(path, lo, hi):
    return np.array(np.load(path, mmap_mode="r")[lo:hi])


def from_npy(path, chunks=None):
    """A Dask array over an .npy file, each chunk of ``chunks`` samples read
    by memory map on the worker that uses it."""
    import dask
    da, _ = _dask()
    p = os.fspath(path)
    head = np.load(p, mmap_mode="r")
    shape, dtype = head.shape, head.dtype
    del head
    size = chunks or DEFAULT_CHUNK
    parts = []
    for lo in range(0, shape[0], size):
        hi = min(lo + size, shape[0])
        parts.append(da.from_delayed(dask.delayed(_npy_block, pure=True)(p, lo, hi),
                                     shape=(hi - lo,) + shape[1:], dtype=dtype))
    return da.concatenate(parts, axis=0)

