"""``bpgen.build``: validate, generate, write atomically, import."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile

import filelock

from .codegen import Generated, generate_all
from .spec import Spec, check_source_size, load_spec

__all__ = ["build", "write_sources", "import_module", "check_out_dir"]

BACKENDS = ("numpy", "c")


def _spec(spec) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def check_out_dir(out_dir, what: str = "out_dir", create: bool = True) -> str:
    """``out_dir`` as a str, created if missing (unless not ``create``: only
    checked, before the work); a ``ValueError`` naming ``what`` when it or a
    directory above it is a file, or it cannot be created."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"{what}: expected a directory (a str or path), "
                         f"got {type(out_dir).__name__}")
    path = os.fspath(out_dir)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{what}: expected a directory, got an empty name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what}: {path} exists and is not a directory (the generated "
                         f"modules are written into a directory)")
    above = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise ValueError(f"{what}: cannot create the directory {path}: {above} is a file")
    if not create:
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}: cannot create the directory {path}: "
                         f"{exc.strerror or exc}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_sources(gen: Generated, out_dir) -> list:
    """Write the generated files; each appears whole or not at all."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for fname, text in sorted(gen.files.items()):
        path = os.path.join(out_dir, fname)
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:       # unchanged: keep the file (and its mtime)
                    written.append(path)
                    continue
        except OSError:
            pass
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{fname}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o666 & ~_umask())     # mkstemp's 0600 -> the usual 0644
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written.append(path)
    return written


def import_module(path: str, module: str):
    """Import a generated module from its file under a unique name."""
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    modname = f"_bpgen_generated.{module}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[modname]
        raise
    return mod


def build_sources(spec, backends=BACKENDS, out_dir=None, *, progress=None,
                  out_name: str = "out_dir") -> list:
    """Generate (and for C, compile) ``backends``; returns the paths written.

    Everything is generated and compiled before the first file is written.
    ``out_dir`` must be a directory or creatable as one, else a ``ValueError``
    whose message starts with ``out_name`` (the command line says ``--out``).
    """
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, "
                             f"got {backend!r}")
    s = _spec(spec)
    out_dir = check_out_dir("generated" if out_dir is None else out_dir, out_name,
                            create=False)           # before the work
    gens = generate_all(s, tuple(backends), progress)
    for gen in gens:              # before anything is written or compiled
        check_source_size(gen.files, s.source)
    check_out_dir(out_dir, out_name)
    written = []
    exts = []
    # one builder at a time per module and directory: concurrent builds of the
    # same architecture each end with a whole, valid module
    with filelock.FileLock(os.path.join(out_dir, f".{s.name}.lock")):
        for gen in gens:
            if gen.c_source is not None:
                from .backends.c.build import compile_extension
                exts.append(compile_extension(gen, out_dir, progress=progress))
        for gen in gens:
            written += write_sources(gen, out_dir)
    return written + exts


def build(spec, backend: str = "numpy", out_dir=None, *, progress=None):
    """Generate, write and import the module for ``spec``; see :func:`bpgen.build`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    s = _spec(spec)
    paths = build_sources(s, (backend,), out_dir, progress=progress)
    module = f"{s.name}_{backend}"
    main = [p for p in paths if os.path.basename(p) == module + ".py"][0]
    return import_module(main, module)
