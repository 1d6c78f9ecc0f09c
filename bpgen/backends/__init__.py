"""Backends, one folder each: ``numpy/`` and ``c/`` (emitter, templates,
runtime files copied verbatim into generated modules; for C also the build
configuration), plus ``common/`` for what both generated Python modules
share (argument checking, flatten/unflatten, the Hessian assembly)."""
