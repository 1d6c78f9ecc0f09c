"""Every ```python snippet of docs/interop.md runs as written (from a
directory where ``examples/`` is the repository's), each in a fresh
namespace; a snippet that imports PyTorch or JAX is skipped, with the
reason, when that framework is not installed."""
import importlib.util
import os
import re

import pytest

from conftest import ROOT

DOC = os.path.join(ROOT, "docs", "interop.md")


def _snippets():
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


SNIPPETS = _snippets()


def test_the_page_has_snippets():
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index, tmp_path, monkeypatch):
    code = SNIPPETS[index]
    for framework in ("torch", "jax"):
        if re.search(rf"^import {framework}\b", code, flags=re.M) and \
                importlib.util.find_spec(framework) is None:
            pytest.skip(f"the snippet needs {framework}, which is not installed")
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    x64 = None
    if "jax" in code:
        import jax
        x64 = jax.config.jax_enable_x64
    try:
        exec(compile(code, f"{DOC}[{index}]", "exec"), {"__name__": "__snippet__"})
    finally:
        if x64 is not None:
            jax.config.update("jax_enable_x64", x64)
