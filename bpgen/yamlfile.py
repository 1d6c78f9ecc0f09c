"""The YAML reader of architecture files: PyYAML's SafeLoader (plain data,
no tags that construct objects), hardened against hostile documents.  Kept
apart from :mod:`bpgen.spec`, which validates what it returns."""
from __future__ import annotations

__all__ = ["hardened_loader"]


def hardened_loader(max_depth: int, short=repr):
    """A SafeLoader, hardened: it refuses duplicate mapping keys (plain PyYAML
    keeps the last one silently, e.g. ``{units: 32, units: 10}``), nesting
    deeper than ``max_depth`` and a merge key (``<<``) that merges a
    mapping into itself, and it keeps one entry per key when merging, so
    that merging copies of merged mappings (a "billion laughs" of merge keys,
    9 aliases a level) does not grow exponentially.  Aliases stay shared
    objects (SafeLoader never copies them)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._depth = 0
            self._checked: set = set()        # ids of mapping nodes checked for duplicates
            self._flattening: set = set()     # ids of mapping nodes being flattened

        def compose_node(self, parent, index):
            self._depth += 1
            try:
                if self._depth > max_depth:
                    raise yaml.composer.ComposerError(
                        None, None, f"nested deeper than {max_depth} levels",
                        self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def _check_duplicates(self, node):
            seen = set()
            for key_node, _ in node.value:
                if (not isinstance(key_node, yaml.ScalarNode)
                        or key_node.tag == "tag:yaml.org,2002:merge"):
                    continue
                key = self.construct_object(key_node)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:       # unhashable: construct_mapping says so
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short(key)}", key_node.start_mark)

        def flatten_mapping(self, node):
            if id(node) in self._flattening:
                raise yaml.constructor.ConstructorError(
                    None, None, "a merge key (<<) merges a mapping into itself",
                    node.start_mark)
            if id(node) not in self._checked:     # its own keys, before any merge
                self._checked.add(id(node))
                self._check_duplicates(node)
            self._flattening.add(id(node))
            try:
                super().flatten_mapping(node)
            finally:
                self._flattening.discard(id(node))
            # the last entry of a key wins: keep only that one
            seen, kept = set(), []
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, yaml.ScalarNode):
                    k = (key_node.tag, key_node.value)
                    if k in seen:
                        continue
                    seen.add(k)
                kept.append((key_node, value_node))
            kept.reverse()
            node.value = kept

    return UniqueKeyLoader
