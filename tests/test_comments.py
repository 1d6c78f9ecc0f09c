"""Generated comments name only what exists: every variable named in a
``Grad of`` head or a statement's equation is a variable of that function,
or the comment says it is not stored there; no comment names a variable by
its label (``m``, ``E``, ``X``, ``Λ_l0``: the notation of ``bpgen show``),
which is not a name of the function; and the structured Hessian's
assembly comments name its own arrays."""
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
    "tiny_transformer": os.path.join(ROOT, "examples", "tiny_transformer.yaml"),
    "mlp-sce-l2": mlp("relu", "softmax_cross_entropy", l2=0.1, name="cm"),
    "gru": {"name": "cg", "input": {"features": 2, "steps": 3},
            "layers": [{"type": "gru", "units": 2}, {"type": "layernorm"},
                       {"type": "dense", "units": 2}],
            "loss": {"type": "mse", "steps": "last"}, "bptt": {"truncate": 2}},
}
_NOTE = re.compile(r"\(not stored in this function: ([\w, ]+)\)")


def _names_label(text: str, label: str) -> bool:
    """Does ``text`` name ``label`` as a word (not ``s`` of ``label's``, ``W`` of the key ``l0.W``, nor
    the keyword ``s=2`` of a window)?"""
    return re.search(r"(?<![\w'.])" + re.escape(label) + r"(?![\w=])", text) is not None


def _labels(vars_: dict) -> dict:
    """label -> variable, for labels that are not a variable's name."""
    return {v.label: n for n, v in vars_.items()
            if v.label and v.label != n and not v.label.isdigit()}


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
            for label, var in _labels(prog.vars).items():
                assert not _names_label(text, label), (prog.name, label, var, text)
            checked += "Grad of" in text
    assert checked > 0


@pytest.mark.parametrize("arch", ["digits", "mlp-sce-l2"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_assembly_comments_name_its_arrays(arch, backend):
    """Each op of the structured Hessian is headed by its equation over the
    function's own arrays (lam_0, l0_d1, a1_0, ...), not over the labels
    ``bpgen show --hessian`` prints (Λ_l0, f'(Z_l0), ã_l0, ...)."""
    from bpgen.backends.c.emitter import _assembly_function as c_function
    from bpgen.backends.numpy.emitter import _assembly_function as numpy_function
    derived = derive_all(load_spec(ARCHS[arch]))
    for name, asm in derived.assemblies.items():
        fn = (numpy_function(derived, name) if backend == "numpy"
              else c_function(derived, name, set(), {}))
        own = set(asm.tensors) | set(asm.inputs)
        curv = derived.programs["curvature"]
        shown = {n for op in asm.ops for n in op.reads() + op.writes()}
        labels = {t.text: n for n, t in asm.with_labels().tensors.items()
                  if t.text != n and n in shown}
        labels.update(_labels(curv.vars))
        heads = [h for block in fn["blocks"] for h in block["head"]]
        assert len(heads) >= len(asm.ops)
        for text in heads:
            named = set(re.findall(r"[A-Za-z_]\w*", text)) & (set(curv.vars) | own)
            assert named <= own, (name, text)
            for label in labels:
                assert not _names_label(text, label), (name, label, text)
        show = [op.equation(asm.with_labels()).text() for op in asm.ops]
        assert any("Λ_" in text for text in show)
