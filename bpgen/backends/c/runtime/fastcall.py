"""How the C module's forward, loss, loss_and_grad and hvp reach the extension's
CPython entry points (runtime/fastcall.c): each is a one-line function that
calls its entry point, which handles the common case in C and hands any
other call to the Python implementation (api.py's function of the same
name, kept as ``_python_<name>``).  Copied verbatim into every generated C
wrapper, after call.py."""
import os as _os

ffi = lib = None        # the generated module's (call.py) replace these


def forward(params, x, lengths=None):   # api.py's, in a generated module
    raise NotImplementedError


def loss(params, x, y, lengths=None):
    raise NotImplementedError


def loss_and_grad(params, x, y, lengths=None):
    raise NotImplementedError


def hvp(params, x, y, v, lengths=None):
    raise NotImplementedError


# ---- bpgen runtime: copied verbatim from here ----

import platform as _platform  # noqa: E402

#: the entry points, in the order of fastcall.c's enum
_ENTRIES = ("forward", "loss", "loss_and_grad", "hvp")


def _install_entry_points():
    """Set ``_c_forward``, ``_c_loss``, ``_c_loss_and_grad`` and ``_c_hvp``
    to the C entry points; False (the module keeps its Python functions) when the
    extension has none, the interpreter is not CPython, or
    $BPGEN_FASTCALL is 0."""
    if (_platform.python_implementation() != "CPython" or not hasattr(lib, "bpgf_install")
            or _os.environ.get("BPGEN_FASTCALL", "").strip() == "0"):
        return False
    g = globals()
    for name in _ENTRIES:
        g["_python_" + name] = g[name]
    # id(): in CPython the address of the module's dict, which C takes as is
    return bool(lib.bpgf_install(ffi.cast("void *", id(g))))


#: the entry points that go through C (all, unless the module has none)
_FASTCALL = ()
if _install_entry_points():
    _FASTCALL = tuple(name for name in _ENTRIES if "_c_" + name in globals())

if "forward" in _FASTCALL:
    def forward(params, x, lengths=None):  # noqa: F811
        if lengths is not None:     # (the masked functions: the Python path)
            return _python_forward(params, x, lengths)  # noqa: F821
        return _c_forward(params, x)  # noqa: F821
    forward.__doc__ = _python_forward.__doc__  # noqa: F821

if "loss" in _FASTCALL:
    def loss(params, x, y, lengths=None):  # noqa: F811
        if lengths is not None:     # (the masked functions: the Python path)
            return _python_loss(params, x, y, lengths)  # noqa: F821
        return _c_loss(params, x, y)  # noqa: F821
    loss.__doc__ = _python_loss.__doc__  # noqa: F821

if "loss_and_grad" in _FASTCALL:
    def loss_and_grad(params, x, y, lengths=None):  # noqa: F811
        if lengths is not None:     # (the masked functions: the Python path)
            return _python_loss_and_grad(params, x, y, lengths)  # noqa: F821
        return _c_loss_and_grad(params, x, y)  # noqa: F821
    loss_and_grad.__doc__ = _python_loss_and_grad.__doc__  # noqa: F821

if "hvp" in _FASTCALL:
    def hvp(params, x, y, v, lengths=None):  # noqa: F811
        if lengths is not None:     # (the masked functions: the Python path)
            return _python_hvp(params, x, y, v, lengths)  # noqa: F821
        return _c_hvp(params, x, y, v)  # noqa: F821
    hvp.__doc__ = _python_hvp.__doc__  # noqa: F821


def _fastcall_counts():
    """{entry point: (calls handled in C, calls handed to the Python path)}
    since the extension was loaded (for tests)."""
    if not _FASTCALL:
        return {}
    return {name: (lib.bpgf_count(i, 0), lib.bpgf_count(i, 1))
            for i, name in enumerate(_ENTRIES)}
