"""The ``bpgen`` command line: build, show, check."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .spec import SpecError

__all__ = ["main"]


class Progress:
    """Progress lines on stderr: by default only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:5.1f}s] {msg}", file=sys.stderr, flush=True)


def _cmd_build(args) -> int:
    from .api import BACKENDS, build_sources
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    progress = Progress(False if args.quiet else None)
    out_dir = "generated" if args.out is None else args.out
    written = build_sources(args.arch, backends, out_dir, progress=progress,
                            out_name="--out")
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_export(args) -> int:
    from .c_export import export
    layout = export(args.arch, args.out, prefix=args.prefix, functions=args.functions,
                    max_batch=1 if args.max_batch is None else args.max_batch,
                    progress=Progress(False if args.quiet else None), out_name="--out")
    for path in layout.paths:
        print(f"wrote {path}")
    return 0


def _cmd_show(args) -> int:
    from .hessian_text import render_hessian
    from .show import render
    if args.hessian:
        print(render_hessian(args.arch, latex=args.latex), end="")
    else:
        print(render(args.arch, latex=args.latex), end="")
    return 0


def _cmd_doc(args) -> int:
    from .doc import write
    text = write(args.arch, args.out, what="-o")
    if args.out:
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _cmd_check(args) -> int:
    from .check import run_check
    # a check takes long: its per-parameter lines show also when stderr is piped
    progress = Progress(not args.quiet)
    return run_check(args.arch, batch=args.batch, seed=args.seed, tol=args.tol,
                     backends=("numpy", "c") if args.backend == "all" else (args.backend,),
                     progress=progress, exhaustive=True if args.exhaustive else None,
                     params_file=args.params)


def _load_npz(path: str, what: str = "--data"):
    """The arrays of an .npz file; a ``ValueError`` naming ``what`` when it
    cannot be read or is no .npz (a zip archive of .npy arrays)."""
    import zipfile

    import numpy as np
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise SpecError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise SpecError(f"{what}: {path} is a directory, not an .npz file")
    if not os.path.exists(path):
        raise SpecError(f"{what}: cannot read {path}: no such file")
    if not is_zip:
        raise SpecError(f"{what}: {path} is not an .npz file (a zip archive of .npy arrays, "
                        f"as numpy.savez writes)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"{what}: cannot read {path}: {first}") from None


def _given_params(spec, files, path: str, partial: bool) -> tuple:
    """(keys of parameters given in the data file, keys left to init_params);
    an error naming unknown keys, and missing ones unless ``partial``."""
    import difflib
    expected = list(spec.param_shapes)
    unknown = [k for k in files if k not in ("x", "y") and k not in spec.param_shapes]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, expected, n=1, cutoff=0.6)
            hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
        raise SpecError(f"--data: {path} holds arrays that are not x, y or a parameter of "
                        f"{spec.name}: {', '.join(hints)}; the parameters are "
                        f"{', '.join(expected)}")
    given = [k for k in expected if k in files]
    missing = [k for k in expected if k not in files]
    if given and missing and not partial:
        raise SpecError(f"--data: {path} holds some parameters but not "
                        f"{', '.join(missing)}; give them all, or pass --partial to take "
                        f"the rest from init_params(--seed)")
    return given, missing


def _cmd_spectrum(args) -> int:
    import numpy as np

    from .api import build
    from .curvature import spectrum
    from .losses import LOSSES
    from .spec import load_spec
    spec = load_spec(args.arch)
    if args.png:                    # before any work: the plot is the last step
        try:
            import matplotlib
        except ImportError:
            raise SpecError("--png: needs matplotlib (pip install matplotlib)") from None
        matplotlib.use("Agg")
        parent = os.path.dirname(args.png) or "."
        if not os.path.isdir(parent) or os.path.isdir(args.png):
            raise SpecError(f"--png: cannot write {args.png}: "
                            + ("it is a directory" if os.path.isdir(args.png)
                               else f"the directory {parent} does not exist"))
    # the rule (docs/distributed.md): a Zarr store, or --scheduler, runs on Dask
    # (an embedded LocalCluster of --workers processes unless --scheduler);
    # an .npz without --scheduler runs in this process
    from .distributed import is_zarr
    zarr_data = is_zarr(args.data)
    on_dask = zarr_data or args.scheduler is not None
    if not on_dask and (args.workers is not None or args.chunk is not None):
        raise SpecError(f"--{'workers' if args.workers is not None else 'chunk'}: only "
                        f"with a Zarr store as --data or --scheduler (docs/distributed.md)")
    if on_dask:
        try:
            import bpgen.distributed as dist
            dist._dask()
            if zarr_data:
                dist._zarr()
        except ImportError as exc:
            raise SpecError(f"--data/--scheduler: {exc}") from None
    lengths = None
    if zarr_data:
        try:
            stored = dist.load(args.data, chunks=args.chunk)
        except (ValueError, OSError) as exc:
            raise SpecError(f"--data: {str(exc).removeprefix('path: ')}") from None
        data, lengths = None, stored["lengths"]
        given, missing = [], list(spec.param_shapes)
    else:
        data = _load_npz(args.data)
        for key in ("x", "y"):
            if key not in data.files:
                raise SpecError(f"--data: {args.data} has no array {key!r} "
                                f"(it needs x and y; optionally the parameters by key)")
        given, missing = _given_params(spec, data.files, args.data, args.partial)
    if args.params is not None and given:
        raise SpecError(f"--params: {args.data} holds parameters too; give them in one "
                        f"of the two files")
    progress = Progress(False if args.quiet else None)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="bpgen-spectrum-") as tmp:
        mod = build(spec, backend=args.backend, out_dir=tmp, progress=progress)
        params = mod.init_params(args.seed)
        in_store = False
        if zarr_data:               # the store's group params (save_dataset), if any
            try:
                stored_params = dist.load_params(args.data, mod)
            except (ValueError, OSError) as exc:
                raise SpecError(f"--data: {str(exc).removeprefix('path: ')}") from None
            if stored_params is not None:
                if args.params is not None:
                    raise SpecError(f"--params: {args.data} holds parameters too (its "
                                    f"group params); give them in one of the two")
                params, in_store = stored_params, True
        if args.params is not None:
            try:
                params = mod.load_params(args.params)
            except (ValueError, OSError) as exc:
                raise SpecError(f"--params: {exc}") from None
        for key in given:
            value = data[key]
            if value.shape != tuple(mod.PARAM_SHAPES[key]):
                raise SpecError(f"--data: {args.data}: parameter {key!r} has shape "
                                f"{value.shape}, expected {tuple(mod.PARAM_SHAPES[key])}")
            params[key] = value
        if zarr_data:
            x, y = stored["x"], stored["y"]
        else:
            x, y = data["x"], data["y"]
            if "lengths" in data.files and on_dask:
                lengths = data["lengths"]
        try:
            if on_dask:
                res = _spectrum_on_dask(args, dist, params, x, y, lengths, progress)
            else:
                res = spectrum(mod, params, x, y, k=args.k, smallest=args.smallest,
                               full=True if args.full else None, progress=progress)
        except SpecError:
            raise
        except ValueError as exc:
            raise SpecError(f"--data: {exc}") from None
    n = int(x.shape[0])
    units = mod.OUTPUT_UNITS
    rows = n * (mod.STEPS or 1) if mod.SEQUENCE_OUTPUT and mod.LOSS_ALL_STEPS else n
    if args.params is not None:
        origin = f"from {args.params}"
    elif in_store:
        origin = f"from {args.data} (group params)"
    elif not given:
        origin = f"init_params({args.seed})"
    elif missing:
        origin = (f"{', '.join(given)} from {args.data}, {', '.join(missing)} from "
                  f"init_params({args.seed}) (--partial)")
    else:
        origin = f"from {args.data}"
    print(f"{spec.name}: exact Hessian spectrum ({res['method']}), {mod.N_PARAMS} parameters, "
          f"batch {n}; parameters {origin}")
    print(f"largest {len(res['largest'])}: " + " ".join(f"{v:.6g}" for v in res["largest"]))
    if "smallest" in res:
        print(f"smallest {len(res['smallest'])}: " + " ".join(f"{v:.6g}" for v in res["smallest"]))
    if "all" in res:
        ev = res["all"]
        tol = max(abs(ev).max(), 1.0) * 1e-10
        print(f"negative {int((ev < -tol).sum())}, zero {int((abs(ev) <= tol).sum())}, "
              f"positive {int((ev > tol).sum())}")
    # the loss's per-sample curvature has rank K - rank_deficit (softmax: K - 1)
    deficit = LOSSES[spec.loss.type].rank_deficit
    per_row = units - deficit
    print(f"rank bounds: Gauss-Newton part <= {rows}*{per_row} = {rows * per_row} "
          f"(scored rows x {f'(output units - {deficit})' if deficit else 'output units'}); "
          f"each weight gradient <= {n * (mod.STEPS or 1)} rows")
    if args.png:
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        if "all" in res:
            ax.hist(res["all"], bins=min(100, max(10, len(res["all"]) // 10)), log=True)
            ax.set_xlabel("eigenvalue")
            ax.set_ylabel("count (log)")
        else:
            vals = np.concatenate([res.get("smallest", []), res["largest"]])
            ax.stem(np.arange(len(vals)), vals)
            ax.set_ylabel("eigenvalue")
        ax.set_title(f"Hessian spectrum of {spec.name} ({mod.N_PARAMS} parameters)")
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")
    return 0


def _spectrum_on_dask(args, dist, params, x, y, lengths, progress):
    """bpgen.distributed.spectrum on --scheduler's cluster, or on a LocalCluster
    of --workers processes (default 2) of one thread each."""
    import contextlib

    import distributed
    with contextlib.ExitStack() as stack:
        if args.scheduler is not None:
            try:
                client = stack.enter_context(distributed.Client(args.scheduler, timeout=10))
            except (OSError, TimeoutError) as exc:
                raise SpecError(f"--scheduler: cannot connect to {args.scheduler}: "
                                f"{exc}") from None
        else:
            workers = args.workers or 2
            progress(f"starting a LocalCluster of {workers} worker processes ...")
            cluster = stack.enter_context(dist.local_cluster(workers))
            client = stack.enter_context(distributed.Client(cluster))
        return dist.spectrum(args.arch, params, x, y, k=args.k, lengths=lengths,
                             smallest=args.smallest, full=True if args.full else None,
                             client=client, backend=args.backend, chunks=args.chunk,
                             progress=progress)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like
    every other error of the command line; --help shows the usage."""

    def error(self, message):
        self.exit(2, f"bpgen: error: {self.prog}: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bpgen",
        description="Symbolic code generator for neural-network derivatives: "
                    "derives backprop in matrix form with SymPy and emits NumPy or "
                    "C (cffi) modules.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"bpgen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser("build", help="generate (and compile) the modules for an architecture",
                       description="Generate the modules for ARCH and print what was written.")
    b.add_argument("arch", help="the architecture file (YAML)")
    b.add_argument("--backend", choices=("numpy", "c", "all"), default="all",
                   help="which backend(s) to generate (default: all)")
    b.add_argument("--out", metavar="DIR", help="output directory (default: generated/)")
    b.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (shown only on a terminal anyway)")
    b.set_defaults(func=_cmd_build)

    e = sub.add_parser("export", help="write an architecture as a standalone C99 library",
                       description="Write ARCH as a standalone C99 library into DIR: "
                                   "PREFIX.h, PREFIX.c (no allocation, no I/O, no state; "
                                   "the caller passes the workspace), a Makefile and "
                                   "example.c (docs/c-export.md).")
    e.add_argument("arch", help="the architecture file (YAML)")
    e.add_argument("--out", metavar="DIR", required=True, help="output directory")
    e.add_argument("--prefix", metavar="NAME",
                   help="a C identifier starting every exported name (default: the "
                        "architecture's name)")
    e.add_argument("--functions", metavar="F1,F2,...",
                   help="which functions: some of forward, loss, loss_and_grad, hvp, ggn_vp, "
                        "hessian "
                        "(default: forward,loss,loss_and_grad,hvp)")
    e.add_argument("--max-batch", type=_positive_int, default=None, metavar="N",
                   help="the batch size PREFIX_MAX_WORK_BYTES is for (default 1)")
    e.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (shown only on a terminal anyway)")
    e.set_defaults(func=_cmd_export)

    s = sub.add_parser("show", help="print the derived equations in matrix form",
                       description="Print the forward pass, the loss and the derived "
                                   "backward pass of ARCH in matrix form.")
    s.add_argument("arch", help="the architecture file (YAML)")
    s.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    s.add_argument("--hessian", action="store_true",
                   help="the block structure of the exact Hessian and the derived "
                        "Hessian-vector product")
    s.set_defaults(func=_cmd_show)

    dc = sub.add_parser("doc", help="write the derivation of an architecture as a document",
                        description="Write the derivation of ARCH as a document a student "
                                    "can follow: the architecture and its shapes, the forward "
                                    "pass, the backward pass block by block as the generated "
                                    "code has it, BPTT and truncation, the gradients as "
                                    "low-rank products, the Hessian's structure and the "
                                    "R-operator program, and the cost of every entry point.")
    dc.add_argument("arch", help="the architecture file (YAML)")
    dc.add_argument("-o", "--out", metavar="FILE.md|FILE.html",
                    help="write to FILE: a name ending in .html gives one self-contained HTML "
                         "page with MathML, any other Markdown (default: Markdown on stdout)")
    dc.set_defaults(func=_cmd_doc)

    c = sub.add_parser("check", help="verify generated modules against the reference "
                                     "and finite differences",
                       description="Build ARCH with the chosen backends into a temporary "
                                   "directory and print, per parameter, the max relative "
                                   "error of each backend against the reference "
                                   "implementation and against central finite differences "
                                   "(every parameter up to 2000 parameters, a random sample "
                                   "of coordinates and directions above; --exhaustive). "
                                   "Exits 1 when an error exceeds the tolerance.")
    c.add_argument("arch", help="the architecture file (YAML)")
    c.add_argument("--backend", choices=("numpy", "c", "all"), default="all")
    c.add_argument("--batch", type=_positive_int, default=5,
                   help="batch size of the test data (5; at most 10000)")
    c.add_argument("--seed", type=_seed, default=0, help="seed of parameters and data (0)")
    c.add_argument("--tol", type=_positive_float, default=None,
                   help="tolerance against the reference (default 1e-8 for float64, "
                        "1e-4 for float32); the tolerance against finite differences "
                        "stays 1e-5 for float64, 1e-4 for float32")
    c.add_argument("--exhaustive", action="store_true",
                   help="finite differences of every parameter (the default up to "
                        "2000 parameters; above, 8 random coordinates and 2 random "
                        "directions of each parameter array)")
    c.add_argument("--params", metavar="FILE.npz",
                   help="check at these parameters (a file a module's save_params wrote; "
                        "another architecture's is an error) instead of random ones")
    c.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (shown by default, also when piped)")
    c.set_defaults(func=_cmd_check)

    sp = sub.add_parser("spectrum", help="eigenvalues of the exact Hessian on a data set",
                        description="Build ARCH, load x and y (and optionally parameters "
                                    "by key, e.g. 'l0.W') from an .npz file, or x, y and "
                                    "the group params from a Zarr store (on Dask), and "
                                    "print the "
                                    "largest (and smallest) eigenvalues of the exact Hessian: "
                                    "the full eigendecomposition for small models, Lanczos on "
                                    "hvp otherwise.")
    sp.add_argument("arch", help="the architecture file (YAML)")
    sp.add_argument("--data", required=True, metavar="FILE.npz|DIR.zarr",
                    help="arrays x, y (optionally lengths) and optionally the "
                         "parameters: in an .npz every parameter by its key (as in "
                         "init_params: 'l0.W', 'l0.b', ...), in a Zarr store the group "
                         "params bpgen.distributed.save_dataset writes; a Zarr store "
                         "runs on Dask")
    sp.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on this Dask scheduler (bpgen.distributed, "
                         "docs/distributed.md); without it, a Zarr --data runs on an "
                         "embedded LocalCluster and an .npz in this process")
    sp.add_argument("--workers", type=_positive_int, default=None,
                    help="worker processes of the embedded LocalCluster (2)")
    sp.add_argument("--chunk", type=_positive_int, default=None,
                    help="samples per chunk on Dask (default: the Zarr store's chunks, "
                         "8192 for an .npz)")
    sp.add_argument("-k", type=_positive_int, default=6, help="how many eigenvalues (6)")
    sp.add_argument("--smallest", action="store_true", help="also the k smallest")
    sp.add_argument("--full", action="store_true", help="full eigendecomposition")
    sp.add_argument("--backend", choices=("numpy", "c"), default="c")
    sp.add_argument("--seed", type=_seed, default=0, help="init_params seed when the data "
                                                        "file holds no parameters")
    sp.add_argument("--partial", action="store_true",
                    help="accept a data file with only some of the parameters: the rest "
                         "from init_params(--seed), as the output says (without it, "
                         "missing or unknown keys are an error)")
    sp.add_argument("--params", metavar="FILE.npz",
                    help="the parameters, from a file a module's save_params wrote "
                         "(another architecture's is an error)")
    sp.add_argument("--png", metavar="FILE", help="draw the spectrum (needs matplotlib)")
    sp.add_argument("--quiet", action="store_true",
                    help="no progress lines on stderr (shown only on a terminal anyway)")
    sp.set_defaults(func=_cmd_spectrum)
    return p


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:          # SpecError and every other bad value
        print(f"bpgen: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("bpgen: error: out of memory (a smaller --batch, -k or model?)", file=sys.stderr)
        return 2
    except OSError as exc:             # a path the checks above did not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bpgen: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bpgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
