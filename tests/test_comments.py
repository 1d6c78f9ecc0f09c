"""Generated comments name only what exists: every variable named in a
``Grad of`` head or a statement's equation is a variable of that function,
or the comment says it is not stored there."""
import os
import re

import pytest

from bpgen.backends.c.emitter import CEmitter
from bpgen.backends.numpy.emitter import NumpyEmitter
from bpgen.derivation import derive_all
from bpgen.spec import load_spec

from conftest import ROOT, mlp

ARCHS = {
    "digits": os.path.join(ROOT, "examples", "digits_mlp.yaml"),
    "sine_lstm": os.path.join(ROOT, "examples", "sine_lstm.yaml"),
    "mlp-sce-l2": mlp("relu", "softmax_cross_entropy", l2=0.1, name="cm"),
    "gru": {"name": "cg", "input": {"features": 2, "steps": 3},
            "layers": [{"type": "gru", "units": 2}, {"type": "layernorm"},
                       {"type": "dense", "units": 2}],
            "loss": {"type": "mse", "steps": "last"}, "bptt": {"truncate": 2}},
}
_NOTE = re.compile(r"\(not stored in this function: ([\w, ]+)\)")


def _comments(emitter):
    for block in emitter.blocks():
        yield from block["head"]
        for line in block["lines"]:
            text = line.strip()
            if text.startswith("#") or text.startswith("/*"):
                yield text


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("emitter_cls", [NumpyEmitter, CEmitter])
def test_comments_name_only_variables_of_their_function(arch, emitter_cls):
    derived = derive_all(load_spec(ARCHS[arch]))
    checked = 0
    for prog in derived.programs.values():
        em = (emitter_cls(prog, "float64") if emitter_cls is NumpyEmitter
              else emitter_cls(prog, "float64", set()))
        graph_vars = set(prog.forward_ops) | set(prog.vars)
        for text in _comments(em):
            note = _NOTE.search(text)
            allowed = set(note.group(1).replace(" ", "").split(",")) if note else set()
            named = set(re.findall(r"[A-Za-z_]\w*", _NOTE.sub("", text))) & graph_vars
            assert named <= em.defined | allowed, (prog.name, text)
            assert allowed <= graph_vars - em.defined, (prog.name, text)
            checked += "Grad of" in text
    assert checked > 0
