"""Stage 1: the architecture file -> a validated, plain-data :class:`Spec`.

Everything that reaches later stages (and, through them, emitted code) has
been checked here: names are validated Python identifiers, sizes are positive
integers, option values come from fixed vocabularies.  Every error is a
:class:`SpecError` (a ``ValueError``) whose message starts with the file and
the offending field, e.g. ``arch.yaml: layers[1].activation: ...``.
"""
from __future__ import annotations

import hashlib
import json
import keyword
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .activations import ACTIVATIONS
from .layers import LAYER_TYPES as LAYER_TYPE_OBJECTS
from .layers import RECURRENT_TYPES, RESERVED_TYPES, ROLES, ParamSpec, fans

__all__ = [
    "SpecError", "Spec", "InputSpec", "LayerSpec", "LossSpec", "load_spec",
    "ACTIVATIONS", "LOSSES", "LAYER_TYPES", "SUPPORTED_LAYER_TYPES", "RECURRENT_TYPES",
]


class SpecError(ValueError):
    """An invalid architecture: the message names the file and the field."""


LOSSES = ("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")
# every layer type bpgen knows (bpgen/layers/), then those the architecture
# file reserves that this version refuses with a clear message
SUPPORTED_LAYER_TYPES = tuple(LAYER_TYPE_OBJECTS)
LAYER_TYPES = SUPPORTED_LAYER_TYPES + RESERVED_TYPES
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class InputSpec:
    """One sample's input.  ``kind`` is ``features``, ``sequence`` or ``image``."""
    kind: str
    shape: tuple[int, ...]          # per sample: (F,), (T, F) or (C, H, W)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerSpec:
    """A validated layer: what every layer has, plus its type's ``options``
    (readable as attributes, ``layer.units``) and its ``params`` (name,
    shape, role) in flat order."""
    type: str
    name: str
    index: int
    in_shape: tuple[int, ...]       # per sample
    out_shape: tuple[int, ...]      # per sample
    options: tuple = ()             # ((key, value), ...) as the layer type validated them
    params: tuple[ParamSpec, ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def __getattr__(self, key: str) -> Any:
        for k, v in object.__getattribute__(self, "options"):
            if k == key:
                return v
        raise AttributeError(f"{self.type} layer has no option {key!r}")


@dataclass(frozen=True)
class LossSpec:
    type: str
    steps: str = "all"


@dataclass(frozen=True)
class Spec:
    """The whole validated architecture: plain data, hashable, printable."""
    name: str
    dtype: str
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    loss: LossSpec
    l2: float = 0.0
    truncate: int | None = None
    source: str = field(default="<dict>", compare=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].out_shape if self.layers else self.input.shape

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{layer.name}.{p.name}": p.shape
                for layer in self.layers for p in layer.params}

    @property
    def param_roles(self) -> dict[str, str]:
        """Parameter key -> role (see :data:`bpgen.layers.ROLES`)."""
        return {f"{layer.name}.{p.name}": p.role
                for layer in self.layers for p in layer.params}

    @property
    def l2_keys(self) -> list[str]:
        """The parameters l2 regularises (weights and kernels, not biases)."""
        return [k for k, r in self.param_roles.items() if ROLES[r].l2]

    @property
    def factor_keys(self) -> list[str]:
        """The weight matrices whose gradients ``grad_factors`` factors."""
        return [k for k, r in self.param_roles.items() if ROLES[r].factors]

    def init_rules(self) -> dict[str, tuple]:
        """Key -> (init kind, fan_in, fan_out) for ``init_params``."""
        out = {}
        for key, role in self.param_roles.items():
            fi, fo = fans(self.param_shapes[key])
            out[key] = (ROLES[role].init, fi, fo)
        return out

    def canonical(self) -> dict[str, Any]:
        """A JSON-able description; its hash identifies generated code."""
        return {
            "name": self.name, "dtype": self.dtype,
            "input": {"kind": self.input.kind, "shape": list(self.input.shape)},
            "layers": [_canonical_layer(lay) for lay in self.layers],
            "loss": {"type": self.loss.type, "steps": self.loss.steps},
            "l2": self.l2, "truncate": self.truncate,
        }

    def content_hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical_layer(lay: LayerSpec) -> dict[str, Any]:
    # these four keys are always present (with their historical defaults) so
    # that content hashes of existing architectures stay what they were
    out = {"type": lay.type, "name": lay.name,
           "activation": lay.option("activation", "identity"),
           "alpha": lay.option("alpha"), "units": lay.option("units"),
           "cell": lay.option("cell"), "in": list(lay.in_shape), "out": list(lay.out_shape)}
    for key, value in lay.options:
        out.setdefault(key, value)
    return out


# --------------------------------------------------------------------------
# validation helpers

class _Ctx:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str) -> None:
        raise SpecError(f"{self.source}: {where}: {msg}")

    def mapping(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(where, f"keys must be strings, got {k!r}")
        return value

    def keys(self, value: dict, where: str, allowed, required=()) -> None:
        for k in value:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k,
                          f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                self.fail(f"{where}.{k}" if where else k, "required key is missing")

    def pos_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected a positive integer, got {_kind(value)}")
        if value < 1:
            self.fail(where, f"expected a positive integer, got {value}")
        if value > 10**7:
            self.fail(where, f"{value} is too large (at most 10000000)")
        return value

    def number(self, value: Any, where: str, *, min_value: float = 0.0,
               strict: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {_kind(value)}")
        try:
            value = float(value)
        except OverflowError:
            self.fail(where, "expected a finite number, got an integer too large "
                             "for a float")
        if not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value}")
        if value < min_value or (strict and value == min_value):
            rel = ">" if strict else ">="
            self.fail(where, f"expected a number {rel} {min_value:g}, got {value:g}")
        return value

    def identifier(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a Python identifier, got {_kind(value)}")
        if not value.isidentifier() or not value.isascii():
            self.fail(where, f"{value!r} is not a Python identifier")
        if keyword.iskeyword(value) or keyword.issoftkeyword(value):
            self.fail(where, f"{value!r} is a Python keyword")
        return value

    def choice(self, value: Any, where: str, choices, what: str) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(where, f"unknown {what} {value!r} (expected one of: "
                             f"{', '.join(choices)})")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------

def load_spec(source: "str | os.PathLike | dict") -> Spec:
    """Read and validate an architecture (a path to YAML, or a dict)."""
    if isinstance(source, dict):
        return validate(source, "<dict>")
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError(f"spec: expected a path or a dict, got {type(source).__name__}")
    path = os.fspath(source)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: cannot read the file: not UTF-8 text "
                        f"(byte {exc.start})") from None
    import yaml
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: {where}: invalid YAML: {problem}") from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5000-digit integer
        raise SpecError(f"{path}: YAML: invalid YAML: "
                        f"{str(exc).splitlines()[0] or type(exc).__name__}") from None
    return validate(data, path)


def _unique_key_loader():
    """A SafeLoader that refuses duplicate mapping keys (plain PyYAML keeps the
    last one silently, e.g. ``{units: 32, units: 10}``)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    if (not isinstance(key_node, yaml.ScalarNode)
                            or key_node.tag == "tag:yaml.org,2002:merge"):
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}",
                            key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def validate(data: Any, source: str = "<dict>", *, experimental: bool = False) -> Spec:
    """Validate a parsed architecture mapping into a :class:`Spec`.

    ``experimental`` is accepted for compatibility and changes nothing.
    """
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        ctx.fail("top level", f"expected a mapping with name, input, layers, loss; "
                              f"got {_kind(data)}")
    ctx.mapping(data, "top level")
    ctx.keys(data, "", ("name", "dtype", "input", "layers", "loss",
                        "regularization", "bptt"),
             required=("name", "input", "layers", "loss"))
    name = ctx.identifier(data["name"], "name")
    dtype = ctx.choice(data.get("dtype", "float64"), "dtype", DTYPES, "dtype")
    inp = _input(ctx, data["input"])

    layers_raw = data["layers"]
    if not isinstance(layers_raw, list):
        ctx.fail("layers", f"expected a list of layers, got {_kind(layers_raw)}")
    if not layers_raw:
        ctx.fail("layers", "at least one layer is needed")
    layers: list[LayerSpec] = []
    seen: dict[str, int] = {}
    shape = inp.shape
    for i, raw in enumerate(layers_raw):
        layer = _layer(ctx, raw, i, shape, inp)
        if layer.name in seen:
            j = seen[layer.name]
            # a default name l<i> may collide with an explicit name elsewhere:
            # blame the explicit one, since layers[i].name may not exist
            if "name" in raw:
                extra = "" if "name" in layers_raw[j] else ", by default"
                ctx.fail(f"layers[{i}].name", f"duplicate layer name {layer.name!r} "
                                             f"(also layers[{j}]{extra})")
            ctx.fail(f"layers[{j}].name", f"{layer.name!r} is also the default name "
                                         f"of layers[{i}]; choose another name")
        seen[layer.name] = i
        layers.append(layer)
        shape = layer.out_shape
    loss = _loss(ctx, data["loss"], inp)
    seq_out = inp.kind == "sequence" and len(shape) == 2
    if len(shape) != 1 and not seq_out:
        ctx.fail("layers", f"the last layer's output has per-sample shape {shape}; "
                           f"a loss needs a flat output (add flatten and dense)")
    if loss.steps == "last" and not seq_out:
        ctx.fail("loss.steps", "steps: last needs a sequence output (one with a step axis)")
    if loss.type == "softmax_cross_entropy" and shape[-1] < 2:
        ctx.fail("loss", "softmax_cross_entropy needs at least 2 output units")

    l2 = 0.0
    if "regularization" in data:
        reg = ctx.mapping(data["regularization"], "regularization")
        ctx.keys(reg, "regularization", ("l2",))
        if "l2" in reg:
            l2 = ctx.number(reg["l2"], "regularization.l2")

    truncate = None
    if "bptt" in data:
        bptt = ctx.mapping(data["bptt"], "bptt")
        ctx.keys(bptt, "bptt", ("truncate",), required=("truncate",))
        truncate = ctx.pos_int(bptt["truncate"], "bptt.truncate")
        if not any(lay.type in RECURRENT_TYPES for lay in layers):
            ctx.fail("bptt", "only recurrent networks take bptt, and this network "
                             "has no recurrent layer")
    return Spec(name=name, dtype=dtype, input=inp, layers=tuple(layers), loss=loss,
                l2=l2, truncate=truncate, source=source)


def _input(ctx: _Ctx, raw: Any) -> InputSpec:
    raw = ctx.mapping(raw, "input")
    keys = set(raw)
    if keys <= {"features", "steps"} and "features" in keys:
        f = ctx.pos_int(raw["features"], "input.features")
        if "steps" in raw:
            t = ctx.pos_int(raw["steps"], "input.steps")
            return InputSpec("sequence", (t, f))
        return InputSpec("features", (f,))
    if keys == {"channels", "height", "width"}:
        c = ctx.pos_int(raw["channels"], "input.channels")
        h = ctx.pos_int(raw["height"], "input.height")
        w = ctx.pos_int(raw["width"], "input.width")
        return InputSpec("image", (c, h, w))
    for k in raw:
        if k not in ("features", "steps", "channels", "height", "width"):
            ctx.fail(f"input.{k}", "unknown key (allowed: features, steps; or "
                                   "channels, height, width)")
    ctx.fail("input", "expected {features: F}, {features: F, steps: T} or "
                      "{channels: C, height: H, width: W}")
    raise AssertionError  # unreachable


def _layer(ctx: _Ctx, raw: Any, i: int, in_shape: tuple[int, ...],
           inp: InputSpec) -> LayerSpec:
    """The common part (type, name) here; the options are the layer type's."""
    where = f"layers[{i}]"
    raw = ctx.mapping(raw, where)
    if "type" not in raw:
        ctx.fail(f"{where}.type", "required key is missing")
    ltype = ctx.choice(raw["type"], f"{where}.type", LAYER_TYPES, "layer type")
    if ltype not in SUPPORTED_LAYER_TYPES:
        ctx.fail(f"{where}.type", f"layer type {ltype!r} is not supported yet by "
                                  f"this version of bpgen (supported: "
                                  f"{', '.join(SUPPORTED_LAYER_TYPES)})")
    name = ctx.identifier(raw["name"], f"{where}.name") if "name" in raw else f"l{i}"
    kind = LAYER_TYPE_OBJECTS[ltype]
    ctx.keys(raw, where, ("type", "name") + tuple(kind.allowed(ctx, raw, where)),
             required=kind.required)
    options, out_shape, params = kind.validate(ctx, raw, where, in_shape, inp)
    return LayerSpec(ltype, name, i, tuple(in_shape), tuple(out_shape),
                     tuple(options.items()), tuple(params))


def _loss(ctx: _Ctx, raw: Any, inp: InputSpec) -> LossSpec:
    if isinstance(raw, str):
        return LossSpec(ctx.choice(raw, "loss", LOSSES, "loss"))
    raw = ctx.mapping(raw, "loss")
    ctx.keys(raw, "loss", ("type", "steps"), required=("type",))
    ltype = ctx.choice(raw["type"], "loss.type", LOSSES, "loss")
    steps = "all"
    if "steps" in raw:
        steps = ctx.choice(raw["steps"], "loss.steps", ("all", "last"), "steps value")
    return LossSpec(ltype, steps)
