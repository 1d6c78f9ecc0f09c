"""Matrix dimensions: an ``int``, ``"N"`` (the batch size) or ``"k*N"`` (a
time-major sequence of k steps).  Shared by the IR, the primitives and the
emitters.

With ``steps: any`` the step count is the symbol T (:data:`TSYM`, a SymPy
symbol read from x at call time, like N): a step count is then T, a
sequence's rows ``"T*N"`` (``"3*T*N"`` for attention's scores, h·T steps of
N rows), and a fixed-size dimension may be T itself (the scores' columns).
Coefficients (:func:`dim_coeffs`, :func:`size_coeffs`) are then
polynomials in T, and :func:`code` prints them the same in Python and C
(an ``int`` prints as before)."""
from __future__ import annotations

import sympy as sp

__all__ = ["broadcast_shape", "seq_dim", "dim_coeffs", "size_coeffs", "dim_code", "TSYM",
           "symbolic", "code", "times_n", "plus", "at_steps", "poly_coeffs", "ceil8",
           "json_shape", "upper"]

#: the step count of a ``steps: any`` sequence, read from x at call time
TSYM = sp.Symbol("T", positive=True, integer=True)
_NSYM = sp.Symbol("N", positive=True, integer=True)


def symbolic(value) -> bool:
    """True for a count that depends on T (not a plain int)."""
    return not isinstance(value, int) and bool(getattr(value, "free_symbols", ()))


def _int(value):
    """A SymPy integer as a plain int (other values unchanged)."""
    if isinstance(value, sp.Basic) and not value.free_symbols:
        return int(value)
    return value


def code(value, bare: bool = False) -> str:
    """An int or a polynomial in T as code, the same in Python and C
    (``T*T``, not ``T**2``; sums in parentheses so that it can be a factor,
    unless ``bare``)."""
    value = _int(sp.expand(value) if isinstance(value, sp.Basic) else value)
    if not isinstance(value, sp.Basic):
        return str(value)
    terms = []
    for (k,), c in sorted(sp.Poly(value, TSYM).terms(), reverse=True):
        factors = ([str(c)] if c != 1 or k == 0 else []) + ["T"] * k
        terms.append("*".join(factors))
    text = " + ".join(terms).replace("+ -", "- ")
    return f"({text})" if len(terms) > 1 and not bare else text


def times_n(a) -> str:
    """a*N as code (``3*N``, ``1*N``, ``T*N``, ``(T + 1)*N``)."""
    return f"{code(a)}*N"


def plus(a, b):
    """a + b, an int when both are."""
    return _int(sp.expand(a + b)) if symbolic(a) or symbolic(b) else a + b


def at_steps(value, t: int) -> int:
    """A count at T = t (an int unchanged)."""
    return int(value.subs(TSYM, t)) if symbolic(value) else int(value)


def poly_coeffs(value) -> tuple:
    """A polynomial in T as its coefficients (c0, c1, ...), lowest first."""
    if not symbolic(value):
        return (int(value),)
    return tuple(int(c) for c in reversed(sp.Poly(value, TSYM).all_coeffs()))


def ceil8(value):
    """A size rounded up to a multiple of 8 (for every T: each coefficient)."""
    if not symbolic(value):
        return -(-value // 8) * 8
    return sp.expand(sum(-(-c // 8) * 8 * TSYM ** k for k, c in enumerate(poly_coeffs(value))))


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


def seq_dim(steps) -> str:
    """The row dimension of a time-major sequence of ``steps`` steps."""
    return f"{code(steps)}*N"


def dim_coeffs(d) -> tuple:
    """A dimension as (a, b) meaning a*N + b (a, b ints, or polynomials in T)."""
    if isinstance(d, int):
        return (0, d)
    if isinstance(d, sp.Basic):
        return (0, _int(d))
    if d == "N":
        return (1, 0)
    if "T" in d:
        e = sp.sympify(d, locals={"T": TSYM, "N": _NSYM})
        return (_int(sp.expand(e / _NSYM)), 0)
    k, n = d.split("*")
    assert n == "N", d
    return (int(k), 0)


def size_coeffs(shape: tuple) -> tuple:
    """Number of elements of ``shape`` as (a, b) meaning a*N + b."""
    n_factor, const = 0, 1
    for d in shape:
        a, b = dim_coeffs(d)
        if (a != 0) if symbolic(a) else a:
            n_factor += 1
            const *= a
        else:
            const *= b
    const = _int(sp.expand(const)) if symbolic(const) else const
    if n_factor == 0:
        return (0, const)
    if n_factor == 1:
        return (const, 0)
    raise ValueError(f"shape {shape} is not linear in N")


def dim_code(d) -> str:
    """A dimension as code (the same in Python and C): 5, N, 3*N, T or T*N."""
    return code(d) if isinstance(d, sp.Basic) else str(d)


def json_shape(shape) -> list:
    """A shape for JSON (the canonical form): T as the string "any"."""
    return ["any" if symbolic(d) else d for d in shape]


def upper(a, b):
    """max(a, b) for counts that may be polynomials in T with non-negative
    coefficients: the coefficient-wise maximum (an upper bound for every T)."""
    if not symbolic(a) and not symbolic(b):
        return max(a, b)
    ca, cb = poly_coeffs(a), poly_coeffs(b)
    n = max(len(ca), len(cb))
    ca, cb = ca + (0,) * (n - len(ca)), cb + (0,) * (n - len(cb))
    return sp.expand(sum(max(x, y) * TSYM ** k for k, (x, y) in enumerate(zip(ca, cb))))
