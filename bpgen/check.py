"""``bpgen check``: generated modules vs the reference and finite differences."""
from __future__ import annotations

import dataclasses
import sys
import tempfile

import numpy as np

from . import reference as ref
from .spec import load_spec

__all__ = ["run_check", "check_module", "fd_grad", "sample_point", "rel_err", "TOLERANCES"]

#: dtype -> (tolerance against the reference, against finite differences)
TOLERANCES = {"float64": (1e-8, 1e-5), "float32": (1e-4, 1e-4)}
#: dtype -> central-difference step
FD_EPS = {"float64": 1e-6}


def rel_err(a, b) -> float:
    """max |a - b| / max(max |b|, 1e-6): relative to the array's scale."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-6))


def sample_point(spec, module, batch: int = 5, seed: int = 0):
    """Parameters (with non-zero biases) and data for checking ``module``."""
    params = module.init_params(seed)
    rng = np.random.default_rng(seed + 1)
    for key, value in params.items():
        params[key] = (value + 0.1 * rng.standard_normal(value.shape)).astype(value.dtype)
    x, y = ref.random_batch(spec, batch, seed)
    return params, x, y


def fd_grad(spec, module, params, x, y) -> dict:
    """Central finite differences of the loss at ``params``.

    A float64 module is differenced through its own ``loss``.  A float32
    module's loss is too coarse to difference (its rounding, divided by the
    step, swamps the derivative), so the float64 reference loss is
    differenced instead, at the same (float32-representable) point.
    """
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if spec.dtype == "float64":
        return ref.finite_difference_grad(lambda p: module.loss(p, x, y), p64,
                                          eps=FD_EPS["float64"])
    return ref.finite_difference_grad(lambda p: ref.loss(spec, p, x, y), p64,
                                      eps=FD_EPS["float64"])


def check_module(spec, module, params, x, y, exact_module=None) -> dict:
    """Errors of ``module`` against the reference and finite differences.

    Returns {row name: (err vs reference, err vs finite differences)}; rows
    are ``forward``, ``loss`` and every parameter key.  With truncated BPTT
    the gradient is not the loss's derivative, so finite differences check
    ``exact_module`` (the same network built without truncation) instead,
    and the truncated gradient is checked against the reference alone.
    """
    rows = {}
    out = module.forward(params, x)
    rows["forward"] = (rel_err(out, ref.forward(spec, params, x)), None)
    value, grads = module.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    rows["loss"] = (rel_err(value, ref_value), rel_err(module.loss(params, x, y), ref_value))
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}

    fd_module = exact_module if exact_module is not None else module
    fd = fd_grad(spec, fd_module, p64, x, y)
    fd_grads = grads if exact_module is None else exact_module.loss_and_grad(params, x, y)[1]
    for key in grads:
        rows[key] = (rel_err(grads[key], ref_grads[key]), rel_err(fd_grads[key], fd[key]))
    return rows


def run_check(arch, batch: int = 5, seed: int = 0, tol: float | None = None,
              backends=("numpy", "c"), progress=None, out=sys.stdout) -> int:
    """Build ``arch`` with ``backends``, print the error table, return 0 or 1."""
    from .api import build
    spec = load_spec(arch)
    if batch < 1:
        raise ValueError(f"batch: expected a positive batch size, got {batch}")
    ref_tol, fd_tol = TOLERANCES[spec.dtype]
    if tol is not None:
        ref_tol = tol
    results = {}
    with tempfile.TemporaryDirectory(prefix="bpgen-check-") as tmp:
        for backend in backends:
            if progress:
                progress(f"building the {backend} backend ...")
            module = build(spec, backend=backend, out_dir=tmp, progress=progress)
            exact = None
            if spec.truncate:
                exact = build(dataclasses.replace(spec, truncate=None, name=spec.name + "_exact"),
                              backend=backend, out_dir=tmp, progress=progress)
            params, x, y = sample_point(spec, module, batch, seed)
            if progress:
                progress(f"checking the {backend} backend ...")
            results[backend] = check_module(spec, module, params, x, y, exact)
    print(f"bpgen check {spec.source}: {spec.name}, {spec.dtype}, batch {batch}, "
          f"seed {seed}", file=out)
    print(f"max relative error; tolerance {ref_tol:g} against the reference (ref), "
          f"{fd_tol:g} against central finite differences (fd)", file=out)
    if spec.truncate:
        print(f"bptt truncate {spec.truncate}: the ref columns check the truncated gradient; "
              f"the fd columns check the same network built without truncation", file=out)
    header = f"{'':<20s}" + "".join(f"{b + ' ref':>14s}{b + ' fd':>14s}" for b in backends)
    print(header, file=out)
    failed = []
    for row in results[backends[0]]:
        cells = []
        for b in backends:
            r, f = results[b][row]
            for val, lim, kind in ((r, ref_tol, "ref"), (f, fd_tol, "fd")):
                if val is None:
                    cells.append(f"{'-':>14s}")
                    continue
                bad = not (val <= lim)
                if bad:
                    failed.append(f"{b} {row} {kind}")
                cells.append(f"{val:>13.2e}{'!' if bad else ' '}")
        print(f"{row:<20s}" + "".join(cells), file=out)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=out)
        return 1
    print("OK: every error is within tolerance", file=out)
    return 0
