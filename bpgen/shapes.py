"""Matrix dimensions: an ``int``, ``"N"`` (the batch size) or ``"T*N"`` (a
time-major sequence of T steps).  Shared by the IR, the primitives and the
emitters."""
from __future__ import annotations

__all__ = ["broadcast_shape", "seq_dim", "dim_coeffs", "size_coeffs", "dim_code"]


def broadcast_shape(shapes) -> tuple:
    """The shape ``shapes`` broadcast to (rows or columns of 1 stretch)."""
    rows, cols = 1, 1
    for r, c in shapes:
        if r != 1:
            if rows != 1 and rows != r:
                raise ValueError(f"shape mismatch in broadcast: {shapes}")
            rows = r
        if c != 1:
            if cols != 1 and cols != c:
                raise ValueError(f"shape mismatch in broadcast: {shapes}")
            cols = c
    return (rows, cols)


def seq_dim(steps: int) -> str:
    """The row dimension of a time-major sequence of ``steps`` steps."""
    return f"{steps}*N"


def dim_coeffs(d) -> tuple:
    """A dimension as (a, b) meaning a*N + b."""
    if isinstance(d, int):
        return (0, d)
    if d == "N":
        return (1, 0)
    k, n = d.split("*")
    assert n == "N", d
    return (int(k), 0)


def size_coeffs(shape: tuple) -> tuple:
    """Number of elements of ``shape`` as (a, b) meaning a*N + b."""
    n_factor, const = 0, 1
    for d in shape:
        a, b = dim_coeffs(d)
        if a:
            n_factor += 1
            const *= a
        else:
            const *= b
    if n_factor == 0:
        return (0, const)
    if n_factor == 1:
        return (const, 0)
    raise ValueError(f"shape {shape} is not linear in N")


def dim_code(d) -> str:
    """A dimension as code (the same in Python and C): 5, N or 3*N."""
    return str(d)
