"""Fuzzing the architecture file: random and mutated documents, as dicts and
as YAML files (with YAML-level attacks: aliases, merge keys, tags, deep
nesting, raw text damage), are either accepted (a Spec) or refused with a
SpecError that starts with the source and names a field; never another
exception, never slowly.  Refused ones make ``bpgen.build`` write nothing;
a sample of small accepted ones build and compute a finite loss."""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
import tempfile

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import bpgen
import bpgen.spec as spec_mod
from bpgen import SpecError, load_spec
from bpgen.spec import MAX_FILE_BYTES, MAX_LAYERS, MAX_NAME_LENGTH, Spec, validate

# --------------------------------------------------------------------------
# the valid architectures of docs/architecture-file.md (and a layernorm one)

DENSE = {"name": "digits_mlp", "dtype": "float64", "input": {"features": 64},
         "layers": [{"type": "dense", "units": 32, "activation": "tanh"},
                    {"type": "dense", "units": 10}],
         "loss": "softmax_cross_entropy", "regularization": {"l2": 1.0e-4}}
RECURRENT = {"name": "sine_forecast", "dtype": "float64",
             "input": {"features": 1, "steps": 20},
             "layers": [{"type": "lstm", "units": 16},
                        {"type": "dense", "units": 1, "name": "head"}],
             "loss": {"type": "mse", "steps": "last"},
             "regularization": {"l2": 1.0e-4}, "bptt": {"truncate": 5}}
BIRNN = {"name": "tagger", "input": {"features": 6, "steps": 12},
         "layers": [{"type": "birnn", "cell": "lstm", "units": 5, "name": "enc"},
                    {"type": "gru", "units": 8}, {"type": "dense", "units": 3}],
         "loss": {"type": "softmax_cross_entropy", "steps": "last"},
         "bptt": {"truncate": 4}}
CONV = {"name": "digits_cnn", "input": {"channels": 1, "height": 8, "width": 8},
        "layers": [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1,
                    "activation": "relu"},
                   {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
                   {"type": "dense", "units": 10}],
        "loss": "softmax_cross_entropy"}
LAYERNORM = {"name": "normed", "input": {"features": 1, "steps": 20},
             "layers": [{"type": "lstm", "units": 16}, {"type": "layernorm"},
                        {"type": "dense", "units": 1, "name": "head"}],
             "loss": {"type": "mse", "steps": "last"}}
BASES = [DENSE, RECURRENT, BIRNN, CONV, LAYERNORM]


def test_the_bases_are_valid():
    for base in BASES:
        assert isinstance(load_spec(copy.deepcopy(base)), Spec)


# --------------------------------------------------------------------------
# what every refusal must look like

_REPR = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?:\.\.\.<\d+ characters>)?"""
_SEGMENT = rf"(?:[A-Za-z_]\w*(?:\[\d+\])?|{_REPR})"
FIELD = re.compile(rf"(?:top level|file|file name|YAML|line \d+|{_SEGMENT}(?:\.{_SEGMENT})*): ")
TOP_KEYS = ("name", "dtype", "input", "layers", "loss", "regularization", "bptt")


def check_message(exc: SpecError, source: str) -> None:
    msg = str(exc)
    assert isinstance(exc, ValueError)
    assert msg.startswith(f"{source}: "), msg
    rest = msg[len(source) + 2:]
    m = FIELD.match(rest)
    assert m, f"no field named: {msg!r}"
    assert len(msg) < len(source) + 2000, f"message too long: {len(msg)}"
    assert "\n" not in rest, msg


def outcome(load, source: str):
    """The Spec, or None after checking the SpecError; any other exception fails."""
    try:
        spec = load()
    except SpecError as exc:
        check_message(exc, source)
        return None
    assert isinstance(spec, Spec)
    return spec


def refused_build_writes_nothing(arch) -> None:
    out = tempfile.mkdtemp(prefix="bpgen_fuzz_")
    try:
        target = os.path.join(out, "gen")
        with pytest.raises(SpecError):
            bpgen.build(arch, backend="numpy", out_dir=target)
        assert not os.path.exists(target) or os.listdir(target) == []
        assert os.listdir(out) in ([], ["gen"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------
# hostile values and mutations

KEYS = ("name", "type", "units", "activation", "alpha", "cell", "filters", "kernel",
        "stride", "padding", "size", "features", "steps", "channels", "height", "width",
        "truncate", "l2", "loss", "layers", "input", "dtype", "<<", "__class__")
NASTY_STRINGS = [
    "", " ", "dense", "tanh", "mse", "lstm", "relu", "float32", "l0", "head",
    'x"""; import os #', 'a*/ system("x"); /*', "a\nb", "a\rb", "\x00", "\u202e",
    "réseau", "ｎｅｔ", "x" * (MAX_NAME_LENGTH + 1), "n" * 300, "x" * 20000, "__import__",
    "None", "class", "match", "_", "${HOME}", "{{ name }}", "%s%n", "\\N{BELL}", "\ud7ff",
    "\U0001f600", "int", "static", "return", "main",
]
NASTY_NUMBERS = [
    0, -1, 1, 2, 10**5, 10**5 + 1, 10**7, 10**7 + 1, 10**8, 2**31, 2**63, 10**30,
    10**400, -10**400, 0.5, -0.0, 1e-320, 1e308,
    float("nan"), float("inf"), float("-inf"), True, False, None,
]
# integers too long for str() (4300 digits): made by a map, since hypothesis
# prints the elements of sampled_from
HUGE_INTS = st.sampled_from([4400, -5000]).map(lambda d: 10**d if d > 0 else -(10**-d))
NUMBERS = st.one_of(st.sampled_from(NASTY_NUMBERS), HUGE_INTS)
SCALARS = st.one_of(
    st.integers(min_value=-5, max_value=70),
    st.integers(),
    NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(NASTY_STRINGS),
    st.binary(max_size=6),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                        max_size=4)),
    max_leaves=8)
# documents from nothing: mappings over the real keys, any values
RANDOM_DOCS = st.one_of(
    st.dictionaries(st.sampled_from(TOP_KEYS), VALUES, max_size=7),
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["net", "m"]), VALUES),
         "input": st.one_of(
             st.fixed_dictionaries({"features": st.integers(-2, 9)}),
             st.fixed_dictionaries({"features": st.integers(-2, 9),
                                    "steps": st.integers(-2, 9)}),
             st.fixed_dictionaries({"channels": st.integers(0, 3), "height": st.integers(0, 9),
                                    "width": st.integers(0, 9)}),
             VALUES),
         "layers": st.lists(st.one_of(st.dictionaries(st.sampled_from(KEYS), VALUES,
                                                      max_size=5), VALUES), max_size=5),
         "loss": st.one_of(st.sampled_from(["mse", "softmax_cross_entropy",
                                            "sigmoid_binary_cross_entropy"]), VALUES)}),
    VALUES,
)


def _slots(node, out):
    """Every (container, key) in a document, to mutate one."""
    if isinstance(node, dict):
        for k in list(node):
            out.append((node, k))
            _slots(node[k], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _slots(node[i], out)
    return out


@st.composite
def mutated(draw, base=None):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)) if base is None else base)
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(doc, [])
        op = draw(st.sampled_from(["replace", "delete", "extra", "wrap", "retype",
                                   "many_layers", "swap_number"]))
        if op == "many_layers":
            layers = doc.get("layers")
            if isinstance(layers, list) and layers:
                doc["layers"] = layers * draw(st.sampled_from([2, MAX_LAYERS, 100]))
            continue
        if op == "retype":
            layers = [lay for lay in doc.get("layers", []) if isinstance(lay, dict)] \
                if isinstance(doc.get("layers"), list) else []
            if layers:
                draw(st.sampled_from(layers))["type"] = draw(st.sampled_from(
                    ["dense", "flatten", "rnn", "lstm", "gru", "birnn", "layernorm", "conv2d",
                     "maxpool2d", "avgpool2d", "Dense", "softmax", ""]))
            continue
        if not slots:
            continue
        container, key = draw(st.sampled_from(slots))
        if op == "replace":
            container[key] = draw(VALUES)
        elif op == "delete":
            del container[key]
        elif op == "extra":
            target = container if isinstance(container, dict) else doc
            target[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)))] = draw(VALUES)
        elif op == "wrap":
            if draw(st.booleans()):
                container[key] = [container[key]]
            else:
                container[key] = {"value": container[key]}
        elif op == "swap_number":
            container[key] = draw(NUMBERS)
    return doc


DOCS = st.one_of(mutated(), RANDOM_DOCS)

FAST = settings(max_examples=200, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@FAST
@given(DOCS)
def test_dicts_are_accepted_or_refused_with_a_field(doc):
    if not isinstance(doc, dict):       # what a YAML file may hold besides a mapping
        outcome(lambda: validate(doc, "<dict>"), "<dict>")
        return
    spec = outcome(lambda: load_spec(doc), "<dict>")
    if spec is None:
        refused_build_writes_nothing(doc)


# --------------------------------------------------------------------------
# YAML files

def _dump(doc, flow, unicode) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode,
                          sort_keys=False, width=10**6)


def _good_text(base) -> str:
    return _dump(base, None, True)


def _laughs(levels: int, fan: int, merge: bool) -> str:
    """A flow node defining anchors a0..a<levels> inline, each ``fan`` copies
    of the one before (by aliases or by merge keys), ending with the last."""
    if merge:
        parts = ["&a0 {k: 1, type: dense, units: 2}"]
        parts += [f"&a{i} {{<<: [{', '.join([f'*a{i - 1}'] * fan)}], k{i}: {i}}}"
                  for i in range(1, levels + 1)]
    else:
        parts = ["&a0 [lol, lol]"]
        parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + f", *a{levels}]"


TAGS = ["!!python/object:os.system", "!!python/name:os.system",
        "!!python/object/apply:os.system", "!!python/module:os", "!!binary", "!!set",
        "!!omap", "!!pairs", "!!timestamp", "!!str", "!!int", "!!float", "!!bool", "!!null",
        "!foo", "!<tag:yaml.org,2002:python/object/new:os.system>", "!!map", "!!seq"]


@st.composite
def yaml_texts(draw):
    """(bytes of a YAML file)."""
    kind = draw(st.sampled_from(["dump", "laughs", "merge_laughs", "recursive", "tag",
                                 "deep_flow", "deep_block", "damage", "dup_key",
                                 "merge_layer", "long", "random_text", "not_utf8"]))
    base = draw(st.sampled_from(BASES))
    good = _good_text(base)
    if kind == "dump":
        doc = draw(DOCS)
        try:
            text = _dump(doc, draw(st.sampled_from([None, True, False])), draw(st.booleans()))
        except (ValueError, yaml.YAMLError):     # e.g. a 5000-digit int: not dumpable
            assume(False)
        return text.encode("utf-8", "surrogatepass")
    lines = good.splitlines()
    # a line "key: value" of the document to put something into
    value_lines = [i for i, ln in enumerate(lines) if re.match(r"^\s*(- )?\w+: \S", ln)]
    i = draw(st.sampled_from(value_lines))
    key = re.match(r"^(\s*(?:- )?\w+: )", lines[i]).group(1)
    if kind in ("laughs", "merge_laughs"):
        node = _laughs(draw(st.integers(1, 12)), draw(st.integers(1, 9)),
                       kind == "merge_laughs")
        where = draw(st.sampled_from(["value", "layers", "top"]))
        if where == "value":
            lines[i] = key + node
        elif where == "layers":
            text = good.split("layers:")[0] + "layers: " + node + "\n" + \
                "\n".join(ln for ln in good.split("layers:")[1].splitlines()
                          if not ln.startswith((" ", "-")) and ln.strip())
            return text.encode()
        else:
            lines.insert(0, "bomb: " + node)
    elif kind == "recursive":
        lines[i] = key + draw(st.sampled_from(["&r [*r]", "&r {a: *r}", "&r [1, [*r, *r]]",
                                               "&r {<<: *r}", "&r {b: {<<: *r}}"]))
    elif kind == "tag":
        tag = draw(st.sampled_from(TAGS))
        lines[i] = key + tag + " " + lines[i][len(key):]
    elif kind == "deep_flow":
        n = draw(st.sampled_from([10, 19, 20, 21, 50, 1000, 20000]))
        lines[i] = key + draw(st.sampled_from(["[" * n + "]" * n,
                                               "{a: " * n + "1" + "}" * n]))
    elif kind == "deep_block":
        n = draw(st.sampled_from([5, 25, 200, 2000]))
        lines[i] = key + "\n" + "".join("  " * (d + 1) + "- \n" for d in range(n - 1)) + \
            "  " * n + "- x"
    elif kind == "damage":
        text = good
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 5))
            text = text[:pos] + draw(st.one_of(
                st.text(max_size=6), st.sampled_from(
                    ["\t", "\x00", "\x1b", "\ufeff", ":", "- ", "&", "*", "!", "|", ">",
                     "{", "}", "[", "]", "'", '"', "%YAML 1.1\n", "---\n", "...\n", "<<: ",
                     "\u2028", "\\"]))) + text[pos + cut:]
        return text.encode("utf-8", "surrogatepass")
    elif kind == "dup_key":
        lines.insert(i + 1, lines[i])
    elif kind == "merge_layer":
        return good.replace("layers:\n- ", "layers:\n- &h ", 1).encode() + \
            draw(st.sampled_from([b"", b"extra: {<<: *h}\n", b"more: [*h, *h]\n"]))
    elif kind == "long":
        n = draw(st.sampled_from([1000, 60000, MAX_FILE_BYTES + 1]))
        what = draw(st.sampled_from(["comment", "string", "name"]))
        if what == "comment":
            lines.append("#" + "x" * n)
        elif what == "string":
            lines[i] = key + "'" + "é" * (n // 2) + "'"
        else:
            lines[0] = "name: " + "n" * n
    elif kind == "random_text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    elif kind == "not_utf8":
        return good.encode() + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80",
                                                     b"# \xe9\n"]))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@FAST
@given(yaml_texts())
def test_yaml_files_are_accepted_or_refused_with_a_field(data):
    d = tempfile.mkdtemp(prefix="bpgen_fuzz_")
    try:
        path = os.path.join(d, "arch.yaml")
        with open(path, "wb") as fh:
            fh.write(data)
        spec = outcome(lambda: load_spec(path), path)
        if spec is None:
            refused_build_writes_nothing(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_yaml_bombs_are_cheap(tmp_path):
    """The worst of each attack at full size, deterministic."""
    import time
    good = _good_text(DENSE)
    texts = {
        "laughs": good.replace("features: 64", "features: " + _laughs(12, 9, False)),
        "merge_laughs": good.replace("features: 64", "features: " + _laughs(12, 9, True)),
        "merge_laughs_layer": good.split("layers:")[0] + "layers: " + _laughs(12, 9, True)
        + "\nloss: mse\n",
        "many_layers": good.split("layers:")[0] + "layers: [&l {type: dense, units: 2}"
        + ", *l" * 10000 + "]\nloss: mse\n",
        "deep": good.replace("features: 64", "features: " + "[" * 30000 + "]" * 30000),
        "wide": "name: [" + "1," * (MAX_FILE_BYTES // 2 - 10) + "1]\n",
        "huge": good + "#" * MAX_FILE_BYTES,
    }
    for what, text in texts.items():
        path = tmp_path / f"{what}.yaml"
        path.write_text(text, encoding="utf-8")
        start = time.process_time()  # CPU time: a loaded machine does not fail it
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert time.process_time() - start < 2.0, what
        check_message(info.value, str(path))


# --------------------------------------------------------------------------
# small accepted architectures build and run

@st.composite
def small_docs(draw):
    kind = draw(st.sampled_from(["dense", "recurrent", "conv", "layernorm"]))
    act = draw(st.sampled_from(["identity", "tanh", "relu", "sigmoid", "leaky_relu", "elu",
                                "softplus", "silu", "gelu"]))
    name = draw(st.sampled_from(["net", "int", "main", "lib", "N", "numpy",
                                 "x" * MAX_NAME_LENGTH]))
    units = st.integers(1, 3)
    if kind == "dense":
        layers = [{"type": "dense", "units": draw(units), "activation": act}
                  for _ in range(draw(st.integers(0, 2)))]
        inp = {"features": draw(st.integers(1, 3))}
    elif kind == "recurrent":
        cell = draw(st.sampled_from(["rnn", "lstm", "gru", "birnn"]))
        layers = [{"type": cell, "units": draw(units)}]
        inp = {"features": draw(st.integers(1, 3)), "steps": draw(st.integers(1, 3))}
    elif kind == "conv":
        layers = [{"type": "conv2d", "filters": draw(units), "kernel": 2, "activation": act},
                  {"type": draw(st.sampled_from(["maxpool2d", "avgpool2d"])), "size": 2},
                  {"type": "flatten"}]
        inp = {"channels": draw(st.integers(1, 2)), "height": 4, "width": 4}
    else:
        layers = [{"type": "dense", "units": draw(st.integers(2, 3)), "activation": act},
                  {"type": "layernorm"}]
        inp = {"features": draw(st.integers(1, 3))}
    for k, layer in enumerate(layers):
        if draw(st.booleans()):
            layer["name"] = draw(st.sampled_from(["int", "static", "return", "main", "ws",
                                                  "out", "real", "x", "y", "N", f"h{k}"]))
    layers.append({"type": "dense", "units": draw(st.integers(1, 3))})
    doc = {"name": name, "dtype": draw(st.sampled_from(["float64", "float32"])),
           "input": inp, "layers": layers,
           "loss": draw(st.sampled_from(["mse", "softmax_cross_entropy",
                                         "sigmoid_binary_cross_entropy"]))}
    if draw(st.booleans()):
        doc["regularization"] = {"l2": draw(st.sampled_from([0, 0.5, 1e-4]))}
    return doc


def _data(mod, n=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n,) + tuple(mod.INPUT_SHAPE)).astype(mod.DTYPE)
    lead = (n, mod.STEPS) if mod.LOSS_ALL_STEPS else (n,)
    if mod.LOSS == "softmax_cross_entropy":
        y = rng.integers(0, mod.OUTPUT_UNITS, size=lead)
    else:
        y = rng.uniform(0, 1, size=lead + (mod.OUTPUT_UNITS,)).astype(mod.DTYPE)
    return x, y


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(small_docs())
def test_small_accepted_architectures_build(doc):
    spec = outcome(lambda: load_spec(doc), "<dict>")
    event("accepted" if spec is not None else "refused")
    if spec is None:
        refused_build_writes_nothing(doc)
        return
    out = tempfile.mkdtemp(prefix="bpgen_fuzz_")
    try:
        mod = bpgen.build(spec, backend="numpy", out_dir=out)
        x, y = _data(mod)
        value = float(mod.loss(mod.init_params(seed=0), x, y))
        assert math.isfinite(value)
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------
# each limit, at its edge

def _seq(steps=3, features=2, **kw):
    return {"name": "s", "input": {"features": features, "steps": steps},
            "layers": [{"type": "rnn", "units": 2}], "loss": "mse", **kw}


def _dense(*units, features=4, **kw):
    return {"name": "d", "input": {"features": features},
            "layers": [{"type": "dense", "units": u} for u in units], "loss": "mse", **kw}


def _image(c, h, w, *layers):
    return {"name": "i", "input": {"channels": c, "height": h, "width": w},
            "layers": list(layers) + [{"type": "flatten"}, {"type": "dense", "units": 2}],
            "loss": "mse"}


LIMITS = [
    # (id, accepted at the limit, refused past it, field)
    ("name", {**_dense(2), "name": "n" * spec_mod.MAX_NAME_LENGTH},
     {**_dense(2), "name": "n" * (spec_mod.MAX_NAME_LENGTH + 1)}, "name"),
    ("layer-name", {**_dense(2), "layers": [{"type": "dense", "units": 2,
                                             "name": "n" * spec_mod.MAX_NAME_LENGTH}]},
     {**_dense(2), "layers": [{"type": "dense", "units": 2,
                               "name": "n" * (spec_mod.MAX_NAME_LENGTH + 1)}]},
     "layers[0].name"),
    ("layers", _dense(*[2] * spec_mod.MAX_LAYERS), _dense(*[2] * (spec_mod.MAX_LAYERS + 1)),
     "layers"),
    ("units", _dense(spec_mod.MAX_UNITS, 2, features=1),
     _dense(spec_mod.MAX_UNITS + 1, 2, features=1), "layers[0].units"),
    ("steps", _seq(steps=spec_mod.MAX_STEPS), _seq(steps=spec_mod.MAX_STEPS + 1),
     "input.steps"),
    ("truncate", _seq(bptt={"truncate": spec_mod.MAX_STEPS}),
     _seq(bptt={"truncate": spec_mod.MAX_STEPS + 1}), "bptt.truncate"),
    ("sample-size", _seq(steps=1000, features=10**4), _seq(steps=1001, features=10**4),
     "input"),
    ("image-size", _image(10, 1000, 1000), _image(10, 1000, 1001), "input"),
    ("output-units", _dense(spec_mod.MAX_OUTPUT_UNITS),
     _dense(spec_mod.MAX_OUTPUT_UNITS + 1), "layers[0].units"),
    ("params", _dense(10**4, 2, features=9990), _dense(10**4, 2, features=10**4),
     "layers[0]"),
    ("tables", _image(1, 100, 100, {"type": "conv2d", "filters": 1, "kernel": 2}),
     _image(1, 300, 300, {"type": "conv2d", "filters": 8, "kernel": 3}), "layers[0]"),
]


@pytest.mark.parametrize("ok, bad, field", [pytest.param(o, b, f, id=i)
                                            for i, o, b, f in LIMITS])
def test_limits(ok, bad, field):
    assert isinstance(load_spec(ok), Spec)
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    msg = str(info.value)
    assert msg.startswith(f"<dict>: {field}: "), msg
    assert "at most" in msg and "\n" not in msg, msg


def test_check_source_size():
    spec_mod.check_source_size({"m_numpy.py": "x = 1\n", "m_c.c": "é" * 1000})
    big = "x" * (spec_mod.MAX_SOURCE_BYTES + 1)
    with pytest.raises(SpecError, match=r"^arch.yaml: m_c.c: .*at most"):
        spec_mod.check_source_size({"m_c.py": "", "m_c.c": big}, "arch.yaml")
    # counted in bytes, not characters
    with pytest.raises(SpecError):
        spec_mod.check_source_size({"m.py": "é" * (spec_mod.MAX_SOURCE_BYTES // 2 + 1)})
