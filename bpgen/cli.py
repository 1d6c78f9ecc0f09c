"""The ``bpgen`` command line: build, show, check."""
from __future__ import annotations

import argparse
import sys
import time

from .spec import SpecError

__all__ = ["main"]


class Progress:
    """Progress lines on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:5.1f}s] {msg}...", file=sys.stderr,
                  flush=True)


def _cmd_build(args) -> int:
    from .api import BACKENDS, build_sources
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    progress = Progress()
    out_dir = args.out or "generated"
    written = build_sources(args.arch, backends, out_dir, progress=progress)
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_show(args) -> int:
    from .show import render
    print(render(args.arch, latex=args.latex), end="")
    return 0


def _cmd_check(args) -> int:
    from .check import run_check
    progress = Progress()
    return run_check(args.arch, batch=args.batch, seed=args.seed, tol=args.tol,
                     backends=("numpy", "c") if args.backend == "all" else (args.backend,),
                     progress=progress)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    b.set_defaults(func=_cmd_build)

    s = sub.add_parser("show", help="print the derived equations in matrix form",
                       description="Print the forward pass, the loss and the derived "
                                   "backward pass of ARCH in matrix form.")
    s.add_argument("arch", help="the architecture file (YAML)")
    s.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    s.set_defaults(func=_cmd_show)

    c = sub.add_parser("check", help="verify generated modules against the reference "
                                     "and finite differences",
                       description="Build ARCH with the chosen backends into a temporary "
                                   "directory and print, per parameter, the max relative "
                                   "error of each backend against the reference "
                                   "implementation and against central finite differences. "
                                   "Exits 1 when an error exceeds the tolerance.")
    c.add_argument("arch", help="the architecture file (YAML)")
    c.add_argument("--backend", choices=("numpy", "c", "all"), default="all")
    c.add_argument("--batch", type=int, default=5, help="batch size of the test data (5)")
    c.add_argument("--seed", type=int, default=0, help="seed of parameters and data (0)")
    c.add_argument("--tol", type=float, default=None,
                   help="tolerance (default 1e-6 for float64, 1e-3 for float32)")
    c.set_defaults(func=_cmd_check)
    return p


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"bpgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bpgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
