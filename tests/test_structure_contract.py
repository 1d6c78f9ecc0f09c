"""The structured Hessian's contract (bpgen.layers.base): a layer type that
declares ``hessian = "kronecker"`` registers its parts from its forward and
has one weight and one bias by role; the derivation and ``show --hessian``
find them by role, never by a parameter's name or position.  Plus the
typed records the derivation hands on (Meta, Loop)."""
import dataclasses

import pytest

from bpgen.derivation import derive_all
from bpgen.hessian_text import render_hessian
from bpgen.ir import Graph
from bpgen.layers import LAYER_TYPES, LayerType, ParamSpec, register
from bpgen.layers.dense import Dense
from bpgen.meta import Meta
from bpgen.spec import load_spec

from conftest import mlp


class _NoParts(Dense):
    """Declares kronecker, but its forward registers nothing."""
    name = "test_dense_no_parts"

    def forward(self, g, layer, x, p):
        return g.matmul(x, p["W"], base=f"{layer.name}_XW")


class _Renamed(Dense):
    """A dense layer whose parameters are called kernel and offset."""
    name = "test_dense_renamed"

    def forward(self, g, layer, x, p):
        return super().forward(g, layer, x, {"W": p["kernel"], "b": p["offset"]})


@pytest.fixture
def types():
    added = []

    def add(cls):
        register(cls)
        added.append(cls.name)
        return cls
    yield add
    for name in added:
        del LAYER_TYPES[name]


def _with(spec, type_name, params=None):
    """``spec`` with every layer of the given type (and parameters)."""
    layers = tuple(dataclasses.replace(lay, type=type_name,
                                       params=params(lay) if params else lay.params)
                   for lay in spec.layers)
    return dataclasses.replace(spec, layers=layers)


def _spec():
    return load_spec(mlp("tanh", "mse", name="kron"))


def test_dense_parts_by_role():
    spec = _spec()
    derived = derive_all(spec)
    layout = derived.meta.curvature
    assert [(cl.name, cl.weight_key, cl.bias_key) for cl in layout.layers] == [
        (lay.name, f"{lay.name}.W", f"{lay.name}.b") for lay in spec.layers]
    assert derived.programs["curvature"].outputs[layout.layers[0].input] == "x_copy"


def test_parameters_are_found_by_role_not_name(types):
    types(_Renamed)
    spec = _with(_spec(), _Renamed.name,
                 lambda lay: (ParamSpec("kernel", lay.params[0].shape, "weight"),
                              ParamSpec("offset", lay.params[1].shape, "bias")))
    derived = derive_all(spec)
    assert [(cl.weight_key, cl.bias_key) for cl in derived.meta.curvature.layers] == [
        (f"{lay.name}.kernel", f"{lay.name}.offset") for lay in spec.layers]
    assert len(derived.assemblies["hessian"].ops) == len(
        derive_all(_spec()).assemblies["hessian"].ops)
    text = render_hessian(spec)
    first = spec.layers[0].name
    assert f"H[{first}.kernel, {first}.offset; {first}.kernel, {first}.offset]" in text
    assert ".W" not in text.replace("W_", "")


def test_kronecker_without_parts_fails_clearly(types):
    types(_NoParts)
    spec = _with(_spec(), _NoParts.name)
    with pytest.raises(ValueError, match=r"'test_dense_no_parts'.*did not register its parts"):
        derive_all(spec)


@pytest.mark.parametrize("params, match", [
    (lambda lay: (ParamSpec("W", lay.params[0].shape, "weight"),
                  ParamSpec("b", lay.params[1].shape, "gain")),
     r"not one 'weight' and one 'bias'"),
    (lambda lay: (ParamSpec("b", lay.params[1].shape, "bias"),
                  ParamSpec("W", lay.params[0].shape, "weight")),
     r"a weight \(p, c\) followed by its bias"),
])
def test_kronecker_parameters_are_checked(params, match):
    spec = _with(_spec(), "dense", params)
    with pytest.raises(ValueError, match=match):
        derive_all(spec)


def test_hessian_structure_is_one_of_three():
    class Odd(LayerType):
        name = "test_odd"
        hessian = "blocky"
    with pytest.raises(ValueError, match=r"'test_odd': hessian must be one of"):
        register(Odd)
    assert "test_odd" not in LAYER_TYPES


def test_meta_is_typed():
    meta = Meta()
    meta.update({"factor_index": {"l0.W": (0, 1)}})
    assert meta.factor_index == {"l0.W": (0, 1)} and meta["factor_index"] is meta.factor_index
    with pytest.raises(AssertionError, match="not a field"):
        meta.update({"curv_layers": []})


def test_loop_record_says_its_direction():
    g = Graph()
    lid = g.loop_begin(5, reverse=True, label="l0 (rnn)")
    g.loop_end()
    loop = g.loops[lid]
    assert loop.reverse and not loop.backward and loop["steps"] == 5
    assert loop.title == "l0 (rnn), t = 4 .. 0" and loop["seq"] == "5*N"
    twin = dict(loop, title=loop["title"] + ", each direction")
    assert twin["reverse"] is True and twin["title"].endswith("each direction")
