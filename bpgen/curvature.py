"""The Hessian spectrum of a generated module: Lanczos on ``hvp``, or the
full eigendecomposition of ``hessian`` for small models."""
from __future__ import annotations

import numpy as np

__all__ = ["spectrum", "FULL_LIMIT"]

#: up to this many parameters the full eigendecomposition is used by default
FULL_LIMIT = 1500


def spectrum(module, params, x, y, k: int = 6, smallest: bool = False,
             full: bool | None = None, tol: float = 0.0, progress=None) -> dict:
    """Eigenvalues of the exact Hessian of ``module``'s loss at ``params``.

    Returns {"largest": the k largest eigenvalues (descending),
    "smallest": the k smallest (ascending) if ``smallest``, "all": every
    eigenvalue (ascending) when the full decomposition was used, "method"}.
    ``full`` (default: N_PARAMS <= FULL_LIMIT) decomposes ``hessian``;
    otherwise Lanczos (SciPy's ``eigsh``) runs on a LinearOperator whose
    matvec is ``hvp``, so the Hessian is never formed.  ``progress`` (a
    callable taking a message) hears of the Lanczos iterations.
    """
    needed = ("N_PARAMS", "hessian", "hvp", "flatten", "unflatten", "DTYPE")
    if not all(hasattr(module, a) for a in needed):
        raise ValueError(f"module: expected a generated module (what bpgen.build returns), "
                         f"got {type(module).__name__}")
    n = module.N_PARAMS
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    k = min(k, n)
    if full is None:
        full = n <= FULL_LIMIT
    if full or k >= n - 1:
        if progress:
            progress(f"full eigendecomposition of the {n} x {n} Hessian ...")
        h = np.asarray(module.hessian(params, x, y, **({"progress": progress} if progress
                                                       else {})), dtype=np.float64)
        evals = np.linalg.eigvalsh(h)
        out = {"largest": evals[::-1][:k].copy(), "all": evals, "method": "eigh"}
        if smallest:
            out["smallest"] = evals[:k].copy()
        return out
    try:
        from scipy.sparse.linalg import LinearOperator, eigsh
    except ImportError:  # pragma: no cover - scipy is a test dependency
        raise ImportError("spectrum: Lanczos needs SciPy (pip install scipy), "
                          "or pass full=True") from None
    dtype = module.DTYPE

    count = [0]

    def matvec(v):
        count[0] += 1
        if progress and count[0] % 20 == 0:
            progress(f"Lanczos: {count[0]} Hessian-vector products")
        v = np.asarray(v, dtype=np.float64).ravel().astype(dtype)
        return module.flatten(module.hvp(params, x, y, module.unflatten(v))).astype(np.float64)

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    out = {"method": "lanczos"}
    if progress:
        progress(f"Lanczos on hvp for {k} eigenvalues ...")
    out["largest"] = np.sort(eigsh(op, k=k, which="LA", tol=tol,
                                   return_eigenvectors=False))[::-1]
    if smallest:
        out["smallest"] = np.sort(eigsh(op, k=k, which="SA", tol=tol,
                                        return_eigenvectors=False))
    out["products"] = count[0]
    if progress:
        progress(f"Lanczos done: {count[0]} Hessian-vector products")
    return out
