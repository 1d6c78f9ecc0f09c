"""Names that try to break out of the generated code: out of a Python
string, comment, docstring or statement, out of a C comment, string or
statement, look-alikes, keywords, and the names the generated code uses for
itself.  Each is either refused with a SpecError naming the field, or (the
merely reserved words of C and of the generated code) builds into modules
in both backends that import and compute the same loss as with plain names.

The model's ``name`` becomes file names and the C symbol prefix
``_bpgen_<name>_<hash>``; a layer's name only ever prefixes generated
variables (``<layer>_XW``, ``d_<layer>_Z``), never stands alone as an
identifier, which is why C keywords are fine there.  The architecture file's
base name is printed in the modules' docstrings and C comments, so it is
checked too.
"""
from __future__ import annotations

import keyword
import os
import re

import numpy as np
import pytest
import yaml

import bpgen
from bpgen import SpecError, load_spec
from bpgen.ir import RESERVED
from bpgen.spec import MAX_NAME_LENGTH, RESERVED_NAME_PREFIXES, validate

# strings built to escape from somewhere; none is an ASCII identifier
BREAKOUTS = [
    'x"""; import os #', "x'''; import os #", 'x"; import os; "', "x'; import os; '",
    "x\nimport os", "x\r\nimport os", "x # comment", "x\\", "\\N{BELL}", "x\\ny",
    'a*/ system("x"); /*', "a */ int evil; /* b", 'x"); system("id"); ("', "x; y",
    "x = 1", "x\x00y", "x\ty", "x\u2028y", "a{{ name }}", "${HOME}", "%(x)s", "$(id)",
    "`id`", "a.b", "a-b", "a/b", "../x", "a b", "", " x", "1x", "x?", "#x",
    "__import__('os').system('id')",
]
# look-alikes: non-ASCII identifiers (Python would accept most of them)
LOOKALIKES = ["nеt", "ｎｅｔ", "ℌ", "ﬁ", "x\u200by", "é", "µ", "Ａ", "x\u0301", "٣x"]
TOO_LONG = ["x" * (MAX_NAME_LENGTH + 1), "n" * 300]
PY_KEYWORDS = sorted(set(keyword.kwlist) | set(keyword.softkwlist))
# refused as layer names only: they would clash with C (see RESERVED_NAME_PREFIXES)
LAYER_ONLY = ["_x", "__import__", "_bpgen", "__P", "CBLAS", "Py_PYTHON", "HAVE_STRING",
              "SIZEOF_VOID", "OPENBLAS_CONFIG", "PYCTYPE", "bpg_gemm", "BPG_EXP"]

REFUSED = BREAKOUTS + LOOKALIKES + TOO_LONG + PY_KEYWORDS


def arch(name="net", layer_name=None):
    layer = {"type": "dense", "units": 3, "activation": "tanh"}
    if layer_name is not None:
        layer["name"] = layer_name
    return {"name": name, "input": {"features": 4},
            "layers": [layer, {"type": "dense", "units": 2}], "loss": "mse"}


def _refused(make, field, source="<dict>", out=None):
    with pytest.raises(SpecError) as info:
        make()
    msg = str(info.value)
    assert msg.startswith(f"{source}: {field}: "), msg
    if out is not None:
        assert not os.path.exists(out) or os.listdir(out) == []
    return msg


@pytest.mark.parametrize("name", REFUSED, ids=repr)
def test_model_name_refused(name, tmp_path):
    out = tmp_path / "out"
    _refused(lambda: bpgen.build(arch(name=name), out_dir=out), "name", out=out)
    # the same through a YAML file (quoted as YAML needs)
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(arch(name=name), allow_unicode=True), encoding="utf-8")
    _refused(lambda: bpgen.build(path, out_dir=out), "name", str(path), out)


@pytest.mark.parametrize("name", REFUSED + LAYER_ONLY, ids=repr)
def test_layer_name_refused(name, tmp_path):
    out = tmp_path / "out"
    msg = _refused(lambda: bpgen.build(arch(layer_name=name), out_dir=out),
                   "layers[0].name", out=out)
    if name in LAYER_ONLY:
        assert "starts with" in msg


def test_name_length_message():
    msg = _refused(lambda: load_spec(arch(name="n" * 300)), "name")
    assert msg == ("<dict>: name: 300 characters is too long (at most 64: it names files "
                   "and C symbols)")


def test_reserved_prefixes_cover_the_macros_seen():
    # every C macro of the form <layer>_H or <layer>_P met so far
    for name in ["Py_PYTHON", "PYMACCONFIG", "HAVE_STRING", "SIZEOF_VOID", "CBLAS",
                 "OPENBLAS_CONFIG", "_STDIO"]:
        assert name.startswith(RESERVED_NAME_PREFIXES), name


# --------------------------------------------------------------------------
# the architecture file's name is printed in the generated code's header

GOOD_YAML = ("name: fname\ninput: {features: 2}\nlayers:\n  - {type: dense, units: 2}\n"
             "loss: mse\n")
BAD_FILE_NAMES = [
    # valid Python once printed in the docstring: it would run on import
    'a""";__import__("os").environ.__setitem__("BPGEN_PWNED", "1");"""',
    'x""".yaml', 'x".yaml', "back\\slash.yaml", "x\\N{BELL}.yaml", "new\nline.yaml",
    "cr\rreturn.yaml", "tab\t.yaml", "bidi\u202eoverride.yaml", "sep\u2028.yaml",
    "esc\x1b[31m.yaml", "x*.yaml\udcff",
]


@pytest.mark.parametrize("fname", BAD_FILE_NAMES, ids=repr)
def test_unsafe_file_names_are_refused(fname, tmp_path, monkeypatch):
    monkeypatch.delenv("BPGEN_PWNED", raising=False)
    try:
        path = tmp_path / fname
        path.write_text(GOOD_YAML, encoding="utf-8")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses the name")
    out = tmp_path / "out"
    for backend in ("numpy", "c"):
        _refused(lambda: bpgen.build(str(path), backend=backend, out_dir=out), "file name",
                 str(path), out)
    assert "BPGEN_PWNED" not in os.environ


def test_unsafe_source_refused_by_validate():
    for source in ['x"""', "dir/x\ny", "x\\y", "a\u202eb"]:
        with pytest.raises(SpecError, match="file name"):
            validate(arch(), source)


@pytest.mark.parametrize("fname", ["my arch (v2).yaml", "arch's.yaml", "réseau.yaml",
                                   "a;b&c|d$e`f.yaml", "{{ x }}.yaml", "%s.yaml"])
def test_harmless_file_names_build(fname, tmp_path):
    path = tmp_path / fname
    path.write_text(GOOD_YAML, encoding="utf-8")
    mod = bpgen.build(str(path), backend="numpy", out_dir=tmp_path / "out")
    assert os.path.basename(str(path)) in mod.__doc__


# --------------------------------------------------------------------------
# harmless identifiers that are reserved words of C or of the generated code

C_KEYWORDS = ["int", "static", "void", "double", "float", "char", "const", "goto", "sizeof",
              "struct", "typedef", "unsigned", "volatile", "restrict", "inline", "long",
              "register", "extern", "enum", "union", "switch", "default", "do", "auto",
              "short", "signed", "main"]
RUNTIME = sorted(RESERVED) + ["x", "y", "d", "gv", "carry", "softmax_p", "loss_curv",
                              "exec", "print", "self", "range", "float64", "tmp", "zeros",
                              "Python", "have_string", "cblas"]
assert not set(C_KEYWORDS + RUNTIME) & set(PY_KEYWORDS)


def _dense_arch():
    # a representative few (each name costs a layer, and C compile time)
    layers = [{"type": "dense", "units": 2, "activation": "tanh", "name": n}
              for n in ("int", "ws")]
    layers.append({"type": "dense", "units": 3, "name": "DTYPE"})
    return {"name": "main", "input": {"features": 3}, "layers": layers,
            "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}}


def _sequence_arch():
    # l0_fwd's params meet the birnn's (l0_fwd_b); d_l0 looks like the
    # cotangent variables (d_<var>) of l0
    return {"name": "x" * MAX_NAME_LENGTH, "input": {"features": 2, "steps": 3},
            "layers": [{"type": "birnn", "units": 2, "name": "l0"},
                       {"type": "dense", "units": 2, "name": "l0_fwd"},
                       {"type": "dense", "units": 2, "name": "d_l0"}],
            "loss": {"type": "mse", "steps": "all"}, "bptt": {"truncate": 2}}


def _conv_arch():
    return {"name": "__import__", "input": {"channels": 2, "height": 6, "width": 6},
            "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1,
                        "activation": "relu", "name": "sizeof"},
                       {"type": "maxpool2d", "size": 2, "name": "t"},
                       {"type": "flatten", "name": "N"},
                       {"type": "dense", "units": 3, "name": "ffi"}],
            "loss": "softmax_cross_entropy"}


def test_reserved_words_as_layer_names_validate():
    """Every C keyword and every name the generated code uses itself is a
    valid layer name (only a few of them are built below: each costs a layer
    and C compile time, and none stands alone in the generated code)."""
    for name in C_KEYWORDS + RUNTIME:
        assert load_spec(arch(name=name, layer_name=name)).layers[0].name == name


def _plain(a):
    """The same architecture with the model and layers named plainly."""
    b = {**a, "name": "plain", "layers": [dict(lay) for lay in a["layers"]]}
    for i, lay in enumerate(b["layers"]):
        lay["name"] = f"p{i}"
    return b


def _data(mod, n=4):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n,) + tuple(mod.INPUT_SHAPE))
    lead = (n, mod.STEPS) if mod.LOSS_ALL_STEPS else (n,)
    if mod.LOSS == "softmax_cross_entropy":
        return x, rng.integers(0, mod.OUTPUT_UNITS, size=lead)
    return x, rng.uniform(0, 1, size=lead + (mod.OUTPUT_UNITS,))


def _c_identifiers(text):
    """The names the C source declares as variables and parameters."""
    return set(re.findall(r"real \*const (\w+) =", text)) | set(
        re.findall(r"const real \*restrict (\w+)", text))


@pytest.mark.parametrize("make", [_dense_arch, _sequence_arch, _conv_arch],
                         ids=["dense", "sequence", "conv"])
def test_reserved_words_build_and_compute_the_same_loss(make, tmp_path):
    a = make()
    spec = load_spec(a)
    plain = bpgen.build(_plain(a), backend="numpy", out_dir=tmp_path / "plain")
    x, y = _data(plain)
    p_plain = plain.init_params(seed=0)
    expected = float(plain.loss(p_plain, x, y))
    for backend in ("numpy", "c"):
        out = tmp_path / backend
        mod = bpgen.build(spec, backend=backend, out_dir=out)
        assert list(mod.PARAM_SHAPES.values()) == list(plain.PARAM_SHAPES.values())
        assert list(mod.PARAM_SHAPES) == list(spec.param_shapes)
        params = dict(zip(mod.PARAM_SHAPES, p_plain.values()))
        got = float(mod.loss(params, x, y))
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-12), backend
        if backend == "c":
            src = (out / f"{spec.name}_c.c").read_text(encoding="utf-8")
            declared = _c_identifiers(src)
            # a layer's name never stands alone as a C identifier (x and y
            # are the inputs' own names)
            layer_names = {lay.name for lay in spec.layers} - {"x", "y"}
            assert not declared & (layer_names | set(C_KEYWORDS)), declared & layer_names
