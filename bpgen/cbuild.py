"""Kept for compatibility: the C build lives in :mod:`bpgen.backends.c.build`."""
from .backends.c.build import (BUILD, BuildConfig, _suffix, cache_dir,  # noqa: F401
                               compile_c_file, compile_extension)

CFLAGS = list(BUILD.cflags)
