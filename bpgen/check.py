"""``bpgen check``: generated modules vs the reference and finite differences."""
from __future__ import annotations

import dataclasses
import math
import sys
import tempfile

import numpy as np

from . import reference as ref
from .spec import load_spec

__all__ = ["run_check", "check_module", "fd_grad", "sample_point", "rel_err", "TOLERANCES",
           "sampled_fd_errors", "SAMPLE_ABOVE"]

#: dtype -> (tolerance against the reference, against finite differences)
TOLERANCES = {"float64": (1e-8, 1e-5), "float32": (1e-4, 1e-4)}
#: dtype -> central-difference step
FD_EPS = {"float64": 1e-6}


def rel_err(a, b, floor: float = 1e-6) -> float:
    """max |a - b| / max(max |b|, floor): relative to the array's scale."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor))


#: a parameter array's gradient is compared relative to its own largest
#: entry, or to this fraction of the whole gradient's largest entry when
#: that is larger: a gradient that is exactly zero (attention's key bias
#: b_k: softmax ignores a shift of a row's scores) would otherwise be
#: judged by the finite differences' own noise (~1e-10 at a loss of ~1)
#: or float32's rounding, relative to nothing
GRAD_SCALE_FLOOR = 1e-3


def grad_floor(grads) -> float:
    """The smallest scale a parameter array's gradient errors are taken
    relative to (GRAD_SCALE_FLOOR of the largest gradient entry, at least
    1e-6)."""
    top = max((float(np.max(np.abs(np.asarray(g, dtype=np.float64))))
               for g in grads.values() if np.size(g)), default=0.0)
    return max(GRAD_SCALE_FLOOR * top, 1e-6)


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


#: the largest batch ``bpgen check`` takes
MAX_BATCH = 10000
#: above this many parameters ``bpgen check`` samples by default (exhaustive
#: finite differences take two loss evaluations per parameter: about a minute
#: for a 100k-parameter MLP)
SAMPLE_ABOVE = 2000
#: sampled mode: per parameter array, this many random coordinates and this
#: many random directions (each checked by one central difference)
SAMPLE_COORDS = 8
SAMPLE_DIRECTIONS = 2


def sampled_fd_errors(f, p64, grads, key, coords: int, directions: int, rng,
                      eps: float = FD_EPS["float64"], floor: float = 1e-6) -> tuple:
    """Central differences of ``f`` at ``p64`` along ``coords`` random
    coordinates and ``directions`` random unit directions of the parameter
    ``key``, against ``grads[key]``.  Returns (error, how many differences):
    the largest |difference - derivative| relative to max(|grads[key]|_max,
    floor) for coordinates, to max(|grads[key]|_2, floor) for directions (the
    bound of a unit direction's derivative)."""
    g = np.asarray(grads[key], dtype=np.float64).reshape(-1)
    arr = p64[key]
    flat = arr.reshape(-1)
    size = flat.size
    picked = rng.choice(size, size=min(coords, size), replace=False)
    err = 0.0
    gmax = max(float(np.max(np.abs(g))) if size else 0.0, floor)
    for i in picked:
        old = flat[i]
        flat[i] = old + eps
        fp = f(p64)
        flat[i] = old - eps
        fm = f(p64)
        flat[i] = old
        err = max(err, abs((fp - fm) / (2 * eps) - g[i]) / gmax)
    gnorm = max(float(np.linalg.norm(g)), floor)
    orig = flat.copy()
    for _ in range(directions):
        d = rng.standard_normal(size)
        d /= np.linalg.norm(d)
        flat[:] = orig + eps * d
        fp = f(p64)
        flat[:] = orig - eps * d
        fm = f(p64)
        flat[:] = orig
        err = max(err, abs((fp - fm) / (2 * eps) - float(g @ d)) / gnorm)
    return err, len(picked) + directions


def _fd_of(f, p64, key, eps: float = FD_EPS["float64"]):
    """Central differences of ``f`` along every coordinate of ``p64[key]``."""
    flat = p64[key].reshape(-1)
    g = np.zeros(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(p64)
        flat[i] = old - eps
        fm = f(p64)
        flat[i] = old
        g[i] = (fp - fm) / (2.0 * eps)
    return g.reshape(p64[key].shape)


def check_module(spec, module, params, x, y, exact_module=None, *, sample=None,
                 progress=None, label: str = "") -> dict:
    """Errors of ``module`` against the reference and finite differences.

    Returns {row name: (err vs reference, err vs finite differences)}; rows
    are ``forward``, ``loss`` and every parameter key.  With truncated BPTT
    the gradient is not the loss's derivative, so finite differences check
    ``exact_module`` (the same network built without truncation) instead,
    and the truncated gradient is checked against the reference alone.

    ``sample`` None differences every coordinate (:func:`fd_grad`); a tuple
    (coords, directions, rng) differences, per parameter array, that many
    random coordinates and random unit directions
    (:func:`sampled_fd_errors`).  ``progress`` hears of each parameter.
    """
    rows = {}
    out = module.forward(params, x)
    rows["forward"] = (rel_err(out, ref.forward(spec, params, x)), None)
    value, grads = module.loss_and_grad(params, x, y)
    ref_value, ref_grads = ref.loss_and_grad(spec, params, x, y)
    rows["loss"] = (rel_err(value, ref_value), rel_err(module.loss(params, x, y), ref_value))
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}

    fd_module = exact_module if exact_module is not None else module
    fd_grads = grads if exact_module is None else exact_module.loss_and_grad(params, x, y)[1]
    if spec.dtype == "float64":
        def f(p):
            return float(fd_module.loss(p, x, y))
    else:       # see fd_grad: the float64 reference loss at the same point
        def f(p):
            return float(ref.loss(spec, p, x, y))
    floor = grad_floor(ref_grads)       # the whole gradient's scale (see GRAD_SCALE_FLOOR)
    for key in grads:
        shape = "x".join(map(str, np.shape(p64[key]))) or "scalar"
        if sample is None:
            if progress:
                progress(f"{label}{key} ({shape}): finite differences of all "
                         f"{p64[key].size} entries ...")
            fd_err = rel_err(fd_grads[key], _fd_of(f, p64, key), floor)
        else:
            coords, directions, rng = sample
            fd_err, count = sampled_fd_errors(f, p64, fd_grads, key, coords, directions, rng,
                                              floor=floor)
            if progress:
                progress(f"{label}{key} ({shape}): {count} finite differences "
                         f"({min(coords, p64[key].size)} coordinates, {directions} directions)")
        rows[key] = (rel_err(grads[key], ref_grads[key], floor), fd_err)
    return rows


def run_check(arch, batch: int = 5, seed: int = 0, tol: float | None = None,
              backends=("numpy", "c"), progress=None, out=None, *,
              exhaustive: bool | None = None, coords: int = SAMPLE_COORDS,
              directions: int = SAMPLE_DIRECTIONS, params_file: str | None = None) -> int:
    """Build ``arch`` with ``backends``, print the error table, return 0 or 1.

    ``exhaustive`` (default: N_PARAMS <= SAMPLE_ABOVE) differences every
    parameter; otherwise ``coords`` random coordinates and ``directions``
    random directions of each parameter array (seeded by ``seed``).
    ``params_file``: check at the parameters a module's ``save_params``
    wrote there (a file of another architecture is a ValueError) instead of
    random ones.
    """
    from .api import build
    out = sys.stdout if out is None else out
    spec = load_spec(arch)
    if batch < 1:
        raise ValueError(f"batch: expected a positive batch size, got {batch}")
    if batch > MAX_BATCH:
        raise ValueError(f"batch: {batch} is too large (at most {MAX_BATCH}: a check needs "
                         f"a few samples, and finite differences run the whole batch)")
    if tol is not None and not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol: expected a positive number, got {tol}")
    for name, value, least in (("coords", coords, 0), ("directions", directions, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    ref_tol, fd_tol = TOLERANCES[spec.dtype]
    if tol is not None:
        ref_tol = tol
    results = {}
    n_params = None
    with tempfile.TemporaryDirectory(prefix="bpgen-check-") as tmp:
        for backend in backends:
            if progress:
                progress(f"building the {backend} backend ...")
            module = build(spec, backend=backend, out_dir=tmp, progress=progress)
            exact = None
            if spec.truncate:
                exact = build(dataclasses.replace(spec, truncate=None, name=spec.name + "_exact"),
                              backend=backend, out_dir=tmp, progress=progress)
            n_params = module.N_PARAMS
            if exhaustive is None:
                exhaustive = n_params <= SAMPLE_ABOVE
            params, x, y = sample_point(spec, module, batch, seed)
            if params_file is not None:
                try:
                    params = module.load_params(params_file)
                except (ValueError, OSError) as exc:
                    raise ValueError(f"--params: {exc}") from None
            sample = None if exhaustive else (coords, directions,
                                              np.random.default_rng(seed + 7))
            if progress:
                progress(f"checking the {backend} backend ...")
            results[backend] = check_module(spec, module, params, x, y, exact, sample=sample,
                                            progress=progress, label=f"{backend}: ")
    print(f"bpgen check {spec.source}: {spec.name}, {spec.dtype}, {n_params} parameters, "
          f"batch {batch}, seed {seed}"
          + (f", parameters from {params_file}" if params_file is not None else ""), file=out)
    if exhaustive:
        print("finite differences of every parameter (exhaustive)", file=out)
    else:
        n_fd = sum(min(coords, int(np.prod(shape))) + directions
                   for shape in module.PARAM_SHAPES.values())
        print(f"sampled finite differences: per parameter array {coords} random coordinates "
              f"and {directions} random unit directions, {n_fd} differences per backend "
              f"(above {SAMPLE_ABOVE} parameters; --exhaustive differences all {n_params})",
              file=out)
    print(f"max relative error; tolerance {ref_tol:g} against the reference (ref), "
          f"{fd_tol:g} against central finite differences (fd); a parameter's errors "
          f"relative to its gradient's largest entry or {GRAD_SCALE_FLOOR:g} of the "
          f"whole gradient's, whichever is larger", file=out)
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
