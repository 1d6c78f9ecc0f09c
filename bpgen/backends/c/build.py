"""Compiling generated C through cffi (API mode, out-of-line), with a cache.

The build configuration is one frozen :class:`BuildConfig`; its ``key()`` is
hashed into the extension's name (by the emitter) and into the cache key, so
changed flags never reuse a stale extension.  Compiled extensions are cached
under ``$BPGEN_CACHE_DIR`` (default ``~/.cache/bpgen``) and copied next to
the generated wrapper.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass

import filelock

from . import blas as _blas

__all__ = ["BuildConfig", "BUILD", "config_for", "compile_extension", "compile_c_file",
           "cache_dir"]


@dataclass(frozen=True)
class BuildConfig:
    """How every generated extension is compiled and linked.

    ``blas`` names the BLAS that large matrix products go to (``None``:
    every product runs inline): "scipy-openblas32" (linked, its directories
    from the installed wheel) or "mkl" (``blas_path``, libmkl_rt, opened at
    load time, see runtime/prelude.c); :func:`config_for` chooses.  ``key()`` (flags and library names) is hashed into extension
    names; ``cache_key()`` adds what differs between installations
    (directories, library version, Python ABI)."""
    # -fno-math-errno, -fno-trapping-math: calls to exp/log and branches such
    # as relu's may then be vectorised (errno and floating-point exception
    # flags are never read; every result is unchanged, unlike -ffast-math);
    # -fopenmp-simd: the loops' `omp simd`, no threads; _CFFI_NO_LIMITED_API:
    # the full CPython API (the entry points of runtime/fastcall.c use it and
    # the NumPy C API; the extension's name carries the Python version anyway)
    # -falign-functions=64: every function on a cache line, so that the time
    # of a hot helper does not depend on where other code puts it: adding
    # hessian_columns to the 4-16-16-3 MLP's module made its (unchanged)
    # Hessian assembly 1.2x slower (115 -> 138 us); aligned, 115 us in both
    # (neutral on the LSTM Hessian and the MLP, Elman and LSTM gradients)
    cflags: tuple = ("-O2", "-std=gnu99", "-fopenmp-simd", "-fno-math-errno",
                     "-fno-trapping-math", "-falign-functions=64", "-Wall",
                     "-Wno-unused-variable", "-Wno-unused-function",
                     "-Wno-unused-but-set-variable", "-D_CFFI_NO_LIMITED_API")
    blas: str | None = None
    blas_version: str = ""
    # the library the module opens itself at load time (MKL's libmkl_rt)
    blas_path: str = ""
    include_dirs: tuple = ()
    library_dirs: tuple = ()
    # libm (on glibc it brings libmvec, the vector math functions)
    libraries: tuple = ("m",)
    # the NumPy whose C API (headers in include_dirs) the entry points use
    numpy_version: str = ""

    def key(self) -> str:
        return repr((self.cflags, self.blas, self.libraries))

    def cache_key(self) -> str:
        return repr((self.key(), self.blas_version, self.blas_path, self.include_dirs,
                     self.library_dirs, self.numpy_version, sys.version, _suffix()))

    @property
    def defines(self) -> tuple:
        """Macros the generated C starts with."""
        return ("BPG_BLAS",) if self.blas else ()

    @property
    def compile_args(self) -> list:
        """The compiler's flags: ``cflags`` and, for MKL, the macros that
        select it and name the library (not in the source: the generated C
        is the same whichever BLAS it is built with)."""
        if self.blas != _blas.MKL:
            return list(self.cflags)
        return list(self.cflags) + ["-DBPG_BLAS_MKL", f'-DBPG_MKL_RT="{self.blas_path}"']

    @property
    def link_args(self) -> list:
        # find the BLAS where it was found at build time, wherever the module goes
        return ([f"-Wl,-rpath,{d}" for d in self.library_dirs]
                + [f for f in self.cflags if f.startswith("-fsanitize")])


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{name}: expected 0 or 1, got {value!r}")
    return value == "1"


def default_config() -> BuildConfig:
    """OpenBLAS from the scipy-openblas32 wheel (a dependency of bpgen), or
    no BLAS when it is not importable (every product then runs inline).

    ``BPGEN_NATIVE=1`` in the environment adds ``-march=native`` (wider
    vectors, e.g. AVX-512 math): opt-in only, since such a module runs only
    on CPUs like this one.  ``BPGEN_CLONES=0`` compiles each function once,
    for baseline x86-64, instead of once per vector width with a choice at
    load time (``target_clones``, see runtime/prelude.c): builds 2-2.6x
    faster, gradients 13-40% slower.  ``BPGEN_SANITIZE=1`` builds with AddressSanitizer
    and UndefinedBehaviorSanitizer (the process must preload libasan)."""
    cflags = BuildConfig.cflags
    if _flag("BPGEN_NATIVE"):
        cflags = cflags + ("-march=native",)
    if os.environ.get("BPGEN_CLONES", "").strip() != "" and not _flag("BPGEN_CLONES"):
        cflags = cflags + ("-DBPG_NO_CLONES",)     # one copy per function: faster builds
    if _flag("BPGEN_SANITIZE"):      # AddressSanitizer + UBSan (see scripts/sanitize.sh)
        cflags = tuple(f for f in cflags if f != "-O2") + (
            "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined")
    import numpy
    numpy_cfg = dict(include_dirs=(numpy.get_include(),), numpy_version=numpy.__version__)
    try:
        import scipy_openblas32 as ob
        from importlib.metadata import version
    except ImportError:
        return BuildConfig(cflags=cflags, **numpy_cfg)
    return BuildConfig(cflags=cflags, blas="scipy-openblas32",
                       blas_version=version("scipy-openblas32"),
                       include_dirs=(ob.get_include_dir(),) + numpy_cfg["include_dirs"],
                       library_dirs=(ob.get_lib_dir(),),
                       libraries=(ob.get_library(), "m"), numpy_version=numpy.__version__)


#: the configuration generated modules are built with (OpenBLAS; see
#: config_for for the BLAS a module gets)
BUILD = default_config()


def _mkl_config(base: BuildConfig) -> BuildConfig:
    """``base`` with Intel MKL (the ``mkl`` wheel) instead of OpenBLAS: no
    library to link (libmkl_rt is opened by path when the module loads), its
    path and version in the cache key."""
    import dataclasses
    return dataclasses.replace(
        base, blas=_blas.MKL, blas_version=_blas.mkl_version(), blas_path=_blas.mkl_library(),
        include_dirs=tuple(d for d in base.include_dirs if "openblas" not in d),
        library_dirs=(), libraries=("m", "dl"))


def config_for(dtype: str) -> BuildConfig:
    """The configuration a module in ``dtype`` is built with: :data:`BUILD`
    with the BLAS ``BPGEN_BLAS`` asks for (``openblas``, ``mkl``, or
    ``auto``, the default: the faster on this CPU, measured once and cached,
    see blas.py; OpenBLAS without the ``mkl`` extra)."""
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    want = _blas.requested()
    if want == "mkl":
        if _blas.mkl_library() is None:
            raise ValueError("BPGEN_BLAS=mkl: Intel MKL is not installed (no libmkl_rt from "
                             "the 'mkl' wheel; pip install 'bpgen[mkl]')")
        return _mkl_config(BUILD)
    if BUILD.blas is None:
        if want == "openblas":
            raise ValueError("BPGEN_BLAS=openblas: scipy-openblas32 is not importable")
        return BUILD
    if want == "auto" and _blas.choose(dtype, cache_dir()) == _blas.MKL:
        return _mkl_config(BUILD)
    return BUILD


def _source_config(c_source: str) -> BuildConfig:
    """The configuration the module emitted as ``c_source`` was named for."""
    return config_for("float32" if "\n#define BPG_FLOAT32\n" in c_source else "float64")


def cache_dir() -> str:
    return os.environ.get("BPGEN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "bpgen")


def _suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def _key(c_source: str, cdef: str, ext_name: str, config: BuildConfig) -> str:
    h = hashlib.sha256()
    for part in (c_source, cdef, ext_name, config.cache_key()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _cached(final: str) -> bool:
    """Is there a whole cached extension at ``final``?  Its hash, recorded
    when it was built, must match (a truncated or corrupted copy is removed)."""
    try:
        with open(final + ".sha256", encoding="ascii") as fh:
            if fh.read().strip() == _digest(final):
                return True
    except OSError:
        pass
    for path in (final, final + ".sha256"):
        with contextlib.suppress(OSError):
            os.unlink(path)
    return False


def _compile(c_source: str, cdef: str, ext_name: str, config: BuildConfig | None = None,
             progress=None) -> str:
    """Path of the compiled extension in the cache, compiling if needed."""
    if config is None:
        config = _source_config(c_source)
    key = _key(c_source, cdef, ext_name, config)
    final_dir = os.path.join(cache_dir(), key)
    final = os.path.join(final_dir, ext_name + _suffix())
    os.makedirs(cache_dir(), exist_ok=True)
    with filelock.FileLock(os.path.join(cache_dir(), f".{key}.lock")):
        if not _cached(final):
            _compile_into(c_source, cdef, ext_name, config, key, final, progress)
    return final


def _compile_into(c_source, cdef, ext_name, config, key, final, progress) -> None:
    import cffi
    final_dir = os.path.dirname(final)
    tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir())
    try:
        ffib = cffi.FFI()
        ffib.cdef(cdef)
        ffib.set_source(ext_name, c_source, extra_compile_args=config.compile_args,
                        include_dirs=list(config.include_dirs),
                        library_dirs=list(config.library_dirs),
                        libraries=list(config.libraries), extra_link_args=config.link_args)
        if progress:
            progress(f"compiling {ext_name} (C, cffi) ...")
        log = io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                built = ffib.compile(tmpdir=tmp, verbose=False)
        except Exception as exc:
            raise RuntimeError(f"C compilation of {ext_name} failed: {exc}\n"
                               f"{log.getvalue()[-4000:]}") from None
        if progress:
            progress(f"compiled {ext_name} in {time.perf_counter() - start:.1f} s")
        os.makedirs(final_dir, exist_ok=True)
        digest = _digest(built)
        os.replace(built, final)    # atomic: a concurrent build sees all or nothing
        with open(final + ".sha256.tmp", "w", encoding="ascii") as fh:
            fh.write(digest)
        os.replace(final + ".sha256.tmp", final + ".sha256")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(built: str, dest_dir: str) -> str:
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(built))
    if os.path.exists(dest):
        with open(dest, "rb") as a, open(built, "rb") as b:
            if a.read() == b.read():
                return dest
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".ext.", suffix=".tmp")
    os.close(fd)
    shutil.copyfile(built, tmp)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)          # a shared library: 0755 under the usual umask
    os.replace(tmp, dest)
    return dest


def compile_extension(gen, out_dir: str, progress=None) -> str:
    """Compile (or fetch from the cache) ``gen``'s extension into ``out_dir``."""
    built = _compile(gen.c_source, gen.cdef, gen.ext_name, None, progress)
    return _install(built, out_dir)


def compile_c_file(c_path: str, cdef: str, ext_name: str, dest_dir: str) -> str:
    """Used by a generated wrapper whose extension is missing: one line on
    stderr when a compilation starts (it takes seconds; a cached one is silent)."""
    with open(c_path, encoding="utf-8") as fh:
        c_source = fh.read()

    def announce(msg: str) -> None:
        if msg.startswith("compiling"):
            print(f"bpgen: the extension {ext_name} is missing: compiling "
                  f"{os.path.basename(c_path)} (C, cffi; seconds, once: it is then "
                  f"cached) ...", file=sys.stderr, flush=True)
    return _install(_compile(c_source, cdef, ext_name, progress=announce), dest_dir)
