"""The generated modules a framework wrapper (bpgen.torch, bpgen.jax) has
seen, by a string key: a custom operator's or a JAX primitive's parameters
must be hashable and printable, so they name the module by its key."""
from __future__ import annotations

import itertools


class ModuleRegistry:
    """key -> module (``modules``) and id(module) -> key (``keys``); a module
    registered stays alive as long as the process runs."""

    def __init__(self, needs: tuple):
        self.needs = needs          # the names a module must have
        self.modules: dict = {}
        self.keys: dict = {}
        self._counter = itertools.count()

    def key(self, mod) -> str:
        """The string ``mod`` is known by (registered on first use); not a
        generated module (a name of ``needs`` missing) is a ValueError."""
        key = self.keys.get(id(mod))
        if key is None or self.modules.get(key) is not mod:
            for name in self.needs:
                if not hasattr(mod, name):
                    raise ValueError(f"mod: expected a generated bpgen module (bpgen.build), "
                                     f"got {type(mod).__name__} without {name!r}")
            key = f"{getattr(mod, '__name__', 'module')}#{next(self._counter)}"
            self.modules[key] = mod
            self.keys[id(mod)] = key
        return key
