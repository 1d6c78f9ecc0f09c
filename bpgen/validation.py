"""The limits an architecture file is held to, its error type and the
helpers that check one field and word the message (:class:`_Ctx`), shared
by :mod:`bpgen.spec` and the rooms it asks (input kinds, layer types,
losses).  Split from ``spec.py`` to keep each file under ~500 lines;
``bpgen.spec`` re-exports every name."""
from __future__ import annotations

import keyword
import math
import numbers
import operator
import reprlib
from typing import Any

#: characters in ``name`` and in a layer's name (file names, C symbols)
MAX_NAME_LENGTH = 64
#: layers in one architecture (the generated code grows with each)
MAX_LAYERS = 64
#: any size: features, channels, height, width, kernel, stride
MAX_SIZE = 10**7
#: a layer's units or filters
MAX_UNITS = 100_000
#: time steps of a sequence input, and bptt.truncate
MAX_STEPS = 10_000
#: values per sample of the input and of every layer's output
MAX_SAMPLE_SIZE = 10**7
#: units of the network's output (modules hold a K x K identity for one-hot labels)
MAX_OUTPUT_UNITS = 4096
#: entries of one parameter (enforced by the layer types) and of all of them
MAX_PARAM_SIZE = 10**8
MAX_PARAMS = 10**8
#: entries of the static index tables (im2col, pooling windows) of the C source
MAX_TABLE_ENTRIES = 10**6
#: bytes of one generated file (see check_source_size)
MAX_SOURCE_BYTES = 20 * 2**20
#: bytes of an architecture file, and how deeply its YAML may nest
MAX_FILE_BYTES = 64 * 2**10
MAX_YAML_DEPTH = 20
#: layer names may not start with these: C reserves a leading underscore,
#: and the headers the C module is compiled with (Python.h, pyconfig.h,
#: cblas.h, bpgen's prelude) define macros such as ``Py_PYTHON_H``,
#: ``HAVE_STRING_H``, ``SIZEOF_VOID_P``, ``CBLAS_H`` that a variable
#: ``<layer>_H`` or ``<layer>_P`` would turn into
RESERVED_NAME_PREFIXES = ("_", "Py_", "PY", "HAVE_", "SIZEOF_", "ALIGNOF_", "CBLAS",
                          "OPENBLAS", "bpg_", "BPG_")


def as_int(value: Any):
    """``value`` as a Python int when it is of an integral type (int, NumPy's
    integers: anything with ``__index__``, which converts exactly), else None.
    Booleans (Python's and NumPy's) and floats, even 3.0, are not sizes."""
    if isinstance(value, bool) or type(value).__name__ == "bool":
        return None
    if isinstance(value, int):
        return int(value)
    if not isinstance(value, numbers.Integral) and not hasattr(type(value), "__index__"):
        return None
    try:
        return operator.index(value)
    except Exception:
        return None


class SpecError(ValueError):
    """An invalid architecture: the message names the file and the field."""


class _Ctx:
    def __init__(self, source: str):
        self.source = source
        self.n_layers = 0           # layers validated so far, nested ones included

    def fail(self, where: str, msg: str) -> None:
        raise SpecError(f"{self.source}: {where}: {msg}")

    @staticmethod
    def short(value: Any) -> str:
        """``value`` for a message: its repr, shortened (see :func:`_short`)."""
        return _short(value)

    def mapping(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(where, f"keys must be strings, got {_short(k)}")
        return value

    def keys(self, value: dict, where: str, allowed, required=()) -> None:
        for k in value:
            if k not in allowed:
                self.fail(f"{where}.{_key(k)}" if where else _key(k),
                          f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                self.fail(f"{where}.{k}" if where else k, "required key is missing")

    def pos_int(self, value: Any, where: str, limit: int = MAX_SIZE,
                why: str = "sizes are bounded") -> int:
        number = as_int(value)
        if number is None:
            self.fail(where, f"expected a positive integer, got {_kind(value)}")
        value = number
        if value < 1:
            self.fail(where, f"expected a positive integer, got {_short(value)}")
        if value > limit:
            self.fail(where, f"{_short(value)} is too large (at most {limit}: {why})")
        return value

    def units(self, value: Any, where: str) -> int:
        """A layer's units or filters."""
        return self.pos_int(value, where, MAX_UNITS, "a layer's width is bounded")

    def steps(self, value: Any, where: str) -> int:
        """An input's time steps."""
        return self.pos_int(value, where, MAX_STEPS, "every step runs once per call")

    def number(self, value: Any, where: str, *, min_value: float = 0.0,
               strict: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                type(value).__name__ == "bool":
            self.fail(where, f"expected a number, got {_kind(value)}")
        try:
            value = float(value)
        except OverflowError:
            self.fail(where, "expected a finite number, got an integer too large "
                             "for a float")
        if not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value}")
        if value < min_value or (strict and value == min_value):
            rel = ">" if strict else ">="
            self.fail(where, f"expected a number {rel} {min_value:g}, got {value:g}")
        return value

    def identifier(self, value: Any, where: str, *, layer: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a Python identifier, got {_kind(value)}")
        if len(value) > MAX_NAME_LENGTH:
            uses = "variables of the generated code" if layer else "files and C symbols"
            self.fail(where, f"{len(value)} characters is too long (at most "
                             f"{MAX_NAME_LENGTH}: it names {uses})")
        if not value.isidentifier() or not value.isascii():
            self.fail(where, f"{_short(value)} is not a Python identifier")
        if keyword.iskeyword(value) or keyword.issoftkeyword(value):
            self.fail(where, f"{value!r} is a Python keyword")
        if layer and value.startswith(RESERVED_NAME_PREFIXES):
            prefix = next(p for p in RESERVED_NAME_PREFIXES if value.startswith(p))
            why = ("C reserves names that start with an underscore" if prefix == "_" else
                   f"the headers the C module is compiled with define macros that start "
                   f"with {prefix!r}")
            self.fail(where, f"{value!r} starts with {prefix!r}, which layer names may not: "
                             f"they prefix variables of the generated C, and {why}")
        return value

    def choice(self, value: Any, where: str, choices, what: str) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(where, f"unknown {what} {_short(value)} (expected one of: "
                             f"{', '.join(choices)})")
        return value


class _ShortRepr(reprlib.Repr):
    """``repr`` shortened, in bounded time, whatever the value (shared or
    self-referencing lists from YAML aliases, huge integers, long strings)."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 60, 60
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 4
        self.maxlong = 30

    def repr_int(self, x, level):
        if abs(x) >= 10**30:        # repr of a 5000-digit int raises ValueError
            sign = "-" if x < 0 else ""
            return f"{sign}<an integer of about {int(abs(x).bit_length() * 0.30103) + 1} digits>"
        return repr(x)

    def repr_str(self, x, level):
        return repr(x) if len(x) <= self.maxstring else (
            repr(x[:self.maxstring // 2]) + f"...<{len(x)} characters>")

    def repr_dict(self, x, level):
        # reprlib sorts the keys (slow for a huge dict, and keys of mixed types)
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in _first(x.items(), self.maxdict)]
        more = ", ..." if len(x) > self.maxdict else ""
        return "{" + ", ".join(items) + more + "}"


def _first(iterable, n):
    out = []
    for item in iterable:
        if len(out) == n:
            break
        out.append(item)
    return out


_SHORT = _ShortRepr()


def _short(value: Any) -> str:
    """A value for a message: its repr, shortened (never raises)."""
    try:
        return _SHORT.repr(value)
    except Exception:       # a hostile __repr__ (only dicts from Python code)
        return f"<{type(value).__name__}>"


def _key(k: str) -> str:
    """An unknown key as a field: itself when a plain ASCII name, else its short
    repr (so that a newline, a look-alike or a megabyte does not reach the message)."""
    plain = k.isidentifier() and k.isascii() and len(k) <= MAX_NAME_LENGTH
    return k if plain else _short(k)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {_short(value)}"
