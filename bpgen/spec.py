"""Stage 1: the architecture file -> a validated, plain-data :class:`Spec`.

Everything that reaches later stages (and, through them, emitted code) has
been checked here: names are validated Python identifiers, sizes are positive
integers, option values come from fixed vocabularies.  Every error is a
:class:`SpecError` (a ``ValueError``) whose message starts with the file and
the offending field, e.g. ``arch.yaml: layers[1].activation: ...``.

(Longer than the ~500 lines a module here usually has, on purpose: every
check of untrusted input, its limits and the message helpers stay in one
file that can be audited as a whole; the YAML reader is in yamlfile.py and
each layer type validates its own options.)

Limits.  An architecture file is untrusted input that becomes code which is
compiled and imported, so everything that grows the work, the memory or the
emitted source is bounded here (the constants below), each with a message
that says why:

* the file: at most ``MAX_FILE_BYTES`` (64 KiB; a real one is a few KB, and
  the pure-Python YAML parser needs about a second per 64 KiB of worst-case
  text), nested at most ``MAX_YAML_DEPTH`` levels; a merge key (``<<``)
  may not merge a mapping into itself, and merged copies of one mapping do
  not pile up (a "billion laughs" of merges stays as small as its text);
  aliases are shared, never expanded, and messages print values shortened,
  so validation is bounded by the size of the text;
* its base name may not hold quotes, backslashes or unprintable characters:
  it is printed in the generated modules' docstrings and C comments;
* ``name`` and layer names: at most ``MAX_NAME_LENGTH`` (64) characters;
  ``name`` names files (``<name>_numpy.py``) and the C extension
  (``_bpgen_<name>_<hash>``).  Layer names prefix the variables of the
  generated code (``<layer>_XW``, ``d_<layer>_Z``, ...), so they may not
  start with an underscore (C reserves those) nor with a prefix the headers
  the C module is compiled with use for macros (``RESERVED_NAME_PREFIXES``:
  ``Py_``, ``HAVE_``, ``CBLAS``, ...; e.g. a recurrent layer ``CBLAS`` would
  declare ``CBLAS_H``, cblas.h's include guard);
* at most ``MAX_LAYERS`` (64) layers: the generated code grows with each
  (about 10 to 50 KB per layer and file; steps do not, loops are emitted);
* ``units`` and ``filters``: at most ``MAX_UNITS`` (100000); other sizes
  (features, channels, height, width, kernel, stride): ``MAX_SIZE`` (10^7);
  ``steps`` and ``bptt.truncate``: ``MAX_STEPS`` (10000); ``padding``: 10^4;
* at most ``MAX_SAMPLE_SIZE`` (10^7) values per sample in the input and in
  every layer's output, and ``MAX_OUTPUT_UNITS`` (4096) output units (a
  generated module builds a K x K identity for one-hot labels on import);
* each parameter at most 10^8 entries (checked by its layer type), all of
  them together at most ``MAX_PARAMS`` (10^8);
* the index tables of convolutions and pooling (im2col, windows), which the
  C module stores in its source at about 10 bytes an entry: at most
  ``MAX_TABLE_ENTRIES`` (10^6) entries in all;
* so that no generated file exceeds ``MAX_SOURCE_BYTES`` (20 MiB), which
  :func:`check_source_size` checks after generation as well (before
  anything is compiled or written).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .activations import ACTIVATIONS
from .inputs import InputKind, allowed_keys, allowed_text, forms_text, kind_for
from .validation import (  # noqa: F401  (re-exported: bpgen.spec.MAX_SIZE, ...)
    MAX_NAME_LENGTH, MAX_LAYERS, MAX_SIZE, MAX_UNITS, MAX_STEPS,
    MAX_SAMPLE_SIZE, MAX_OUTPUT_UNITS, MAX_PARAM_SIZE, MAX_PARAMS, MAX_TABLE_ENTRIES,
    MAX_SOURCE_BYTES, MAX_FILE_BYTES, MAX_YAML_DEPTH, RESERVED_NAME_PREFIXES, SpecError,
    _Ctx, _short, _key, _kind)
from .yamlfile import hardened_loader
from .shapes import at_steps, json_shape
from .layers import LAYER_TYPES as LAYER_TYPE_OBJECTS
from .layers import RECURRENT_TYPES, RESERVED_TYPES, ROLES, ParamSpec, fans
from .losses import LOSSES as LOSS_OBJECTS

__all__ = [
    "SpecError", "Spec", "InputSpec", "LayerSpec", "LossSpec", "load_spec",
    "ACTIVATIONS", "LOSSES", "LAYER_TYPES", "SUPPORTED_LAYER_TYPES", "RECURRENT_TYPES",
    "check_source_size", "MAX_NAME_LENGTH", "MAX_LAYERS", "MAX_SIZE", "MAX_UNITS",
    "MAX_STEPS", "MAX_SAMPLE_SIZE", "MAX_OUTPUT_UNITS", "MAX_PARAMS", "MAX_TABLE_ENTRIES",
    "MAX_SOURCE_BYTES", "MAX_FILE_BYTES", "MAX_YAML_DEPTH", "RESERVED_NAME_PREFIXES",
]

#: every loss bpgen knows (bpgen/losses/, one file each)
LOSSES = tuple(LOSS_OBJECTS)
# every layer type bpgen knows (bpgen/layers/), then those the architecture
# file reserves that this version refuses with a clear message
SUPPORTED_LAYER_TYPES = tuple(LAYER_TYPE_OBJECTS)
LAYER_TYPES = SUPPORTED_LAYER_TYPES + RESERVED_TYPES
DTYPES = ("float64", "float32")


#: the validated input section: an input kind (bpgen/inputs/), e.g.
#: ``Features(shape=(64,))``; ``kind``, ``shape``, ``steps``, ``is_sequence``
InputSpec = InputKind


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
        # while pickle rebuilds a LayerSpec its fields are not set yet: no
        # options to look in (reading them here would recurse without end)
        try:
            options = object.__getattribute__(self, "options")
        except AttributeError:
            raise AttributeError(key) from None
        for k, v in options:
            if k == key:
                return v
        raise AttributeError(f"{object.__getattribute__(self, 'type')} layer has no option {key!r}")


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
            "input": self.input.canonical(),
            "layers": [_canonical_layer(lay) for lay in self.layers],
            "loss": {"type": self.loss.type, "steps": self.loss.steps},
            "l2": self.l2, "truncate": self.truncate,
        }

    def content_hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def architecture(self) -> dict[str, Any]:
        """What parameters belong to: the canonical description without the
        file's ``name`` (a renamed copy of a network takes its parameters)."""
        return {k: v for k, v in self.canonical().items() if k != "name"}

    def architecture_hash(self) -> str:
        """The SHA-256 of :meth:`architecture`: what ``save_params`` writes
        and ``load_params`` compares."""
        text = json.dumps(self.architecture(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical_layer(lay: LayerSpec) -> dict[str, Any]:
    # these four keys are always present (with their historical defaults) so
    # that content hashes of existing architectures stay what they were
    out = {"type": lay.type, "name": lay.name,
           "activation": lay.option("activation", "identity"),
           "alpha": lay.option("alpha"), "units": lay.option("units"),
           "cell": lay.option("cell"), "in": json_shape(lay.in_shape),
           "out": json_shape(lay.out_shape)}
    for key, value in lay.options:
        if isinstance(value, tuple) and value and isinstance(value[0], LayerSpec):
            value = [_canonical_layer(v) for v in value]     # a block's layers
        out.setdefault(key, value)
    return out


# --------------------------------------------------------------------------
# validation helpers

def _unsafe_source(source: str) -> str | None:
    """Why the file's base name cannot be printed in the generated modules'
    docstrings and C comments (header.j2), or None."""
    name = os.path.basename(source)
    if not name.isprintable():
        return "an unprintable character (such as a newline)"
    for bad, what in (('"', "a double quote"), ("\\", "a backslash"),
                      ("*/", "'*/'"), ("/*", "'/*'")):
        if bad in name:
            return what
    return None


def check_source_size(files: dict, source: str = "<generated>") -> None:
    """Raise :class:`SpecError` if a generated file (name -> text) is larger
    than ``MAX_SOURCE_BYTES``; call it before writing or compiling anything."""
    for fname, text in files.items():
        size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
        if size > MAX_SOURCE_BYTES:
            raise SpecError(f"{source}: {fname}: the generated file has {size} bytes, too "
                            f"many (at most {MAX_SOURCE_BYTES}: a bound on the code "
                            f"compiled and imported)")


# --------------------------------------------------------------------------

def _looks_like_yaml(text: str) -> bool:
    """A str that is architecture text rather than a file name (a file that
    exists is a file, whatever its name)."""
    if os.path.exists(text):
        return False
    return "\n" in text.strip() or text.lstrip().startswith(("{", "name:", "input:",
                                                              "layers:"))


def load_spec(source: "str | os.PathLike | dict") -> Spec:
    """Read and validate an architecture (a path to YAML, or a dict)."""
    if isinstance(source, dict):
        return validate(source, "<dict>")
    if isinstance(source, Spec):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError(f"spec: expected a path (to a YAML file), a dict or a Spec, "
                        f"got {type(source).__name__}")
    path = os.fsdecode(os.fspath(source))
    if isinstance(source, str) and _looks_like_yaml(path):
        raise SpecError("spec: expected a path (to a YAML file), a dict or a Spec, got YAML "
                        "text (pass yaml.safe_load(text), or write it to a file)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: file: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:           # e.g. a NUL character in the path
        raise SpecError(f"{path}: file: cannot read it: {exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(f"{path}: file: larger than {MAX_FILE_BYTES} bytes (an architecture "
                        f"file is a few kilobytes; the bound keeps parsing fast)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: file: cannot read it: not UTF-8 text "
                        f"(byte {exc.start})") from None
    import yaml
    try:
        data = yaml.load(text, Loader=hardened_loader(MAX_YAML_DEPTH, _short))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: {where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML: invalid YAML: nested too deeply") from None
    except Exception as exc:  # e.g. a 5000-digit integer (ValueError)
        first = (str(exc).splitlines() or [""])[0][:200]
        raise SpecError(f"{path}: YAML: invalid YAML: "
                        f"{first or type(exc).__name__}") from None
    return validate(data, path)


def validate(data: Any, source: str = "<dict>", *, experimental: bool = False) -> Spec:
    """Validate a parsed architecture mapping into a :class:`Spec`.

    ``experimental`` is accepted for compatibility and changes nothing.
    """
    ctx = _Ctx(source)
    bad = _unsafe_source(source)
    if bad is not None:
        ctx.fail("file name", f"{_short(os.path.basename(source))} holds {bad}; rename the "
                              f"file (its name is printed in the generated modules' "
                              f"docstrings and C comments)")
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
    if len(layers_raw) > MAX_LAYERS:
        ctx.fail("layers", f"{len(layers_raw)} layers are too many (at most {MAX_LAYERS}: "
                           f"the generated code grows with every layer)")
    layers: list[LayerSpec] = []
    seen: dict[str, int] = {}
    shape = inp.shape
    n_params = n_table = 0
    for i, raw in enumerate(layers_raw):
        layer = _layer(ctx, raw, i, shape, inp)
        _check_layer_sizes(ctx, layer)
        n_params += sum(math.prod(p.shape) for p in layer.params)
        if n_params > MAX_PARAMS:
            ctx.fail(f"layers[{i}]", f"the parameters reach {n_params} entries in all, too "
                                     f"many (at most {MAX_PARAMS}: they are held in memory, "
                                     f"with their gradients)")
        n_table += LAYER_TYPE_OBJECTS[layer.type].table_entries(layer)
        if n_table > MAX_TABLE_ENTRIES:
            ctx.fail(f"layers[{i}]", f"the index tables of the convolutions and pooling reach "
                                     f"{n_table} entries in all, too many (at most "
                                     f"{MAX_TABLE_ENTRIES}: the C module holds them in its "
                                     f"source, about 10 bytes an entry)")
        if layer.name in seen:
            j = seen[layer.name]
            # a default name l<i> may collide with an explicit name elsewhere:
            # blame the explicit one, since layers[i].name may not exist
            if "name" in raw:
                extra = "" if "name" in layers_raw[j] else ", by default"
                ctx.fail(f"layers[{i}].name",
                         f"duplicate layer name {layer.name!r} (also layers[{j}]{extra})")
            ctx.fail(f"layers[{j}].name", f"{layer.name!r} is also the default name of "
                                          f"layers[{i}]; choose another name")
        seen[layer.name] = i
        layers.append(layer)
        shape = layer.out_shape
    loss = _loss(ctx, data["loss"], inp)
    seq_out = inp.is_sequence and len(shape) == 2
    if len(shape) != 1 and not seq_out:
        ctx.fail("layers", f"the last layer's output has per-sample shape {shape}; "
                           f"a loss needs a flat output (add flatten and dense)")
    if loss.steps == "last" and not seq_out:
        ctx.fail("loss.steps", "steps: last needs a sequence output (one with a step axis)")
    LOSS_OBJECTS[loss.type].validate(ctx, "loss", shape)
    if shape[-1] > MAX_OUTPUT_UNITS:
        last = len(layers) - 1
        where = f"layers[{last}].units" if "units" in layers_raw[last] else f"layers[{last}]"
        ctx.fail(where, f"{shape[-1]} output units are too many (at most {MAX_OUTPUT_UNITS}: "
                        f"a generated module holds a K x K identity matrix for one-hot "
                        f"labels)")

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
        truncate = ctx.pos_int(bptt["truncate"], "bptt.truncate", MAX_STEPS,
                               "no input has more steps")
        if not any(lay.type in RECURRENT_TYPES for lay in layers):
            ctx.fail("bptt", "only recurrent networks take bptt, and this network "
                             "has no recurrent layer")
    return Spec(name=name, dtype=dtype, input=inp, layers=tuple(layers), loss=loss,
                l2=l2, truncate=truncate, source=source)


def _input(ctx: _Ctx, raw: Any) -> InputSpec:
    """The input kind (bpgen/inputs/) whose keys ``raw`` has, which checks the values."""
    raw = ctx.mapping(raw, "input")
    kind = kind_for(set(raw))
    if kind is not None:
        return _sample_size(ctx, kind.parse(ctx, raw))
    for k in raw:
        if k not in allowed_keys():
            ctx.fail(f"input.{_key(k)}", f"unknown key (allowed: {allowed_text()})")
    ctx.fail("input", f"expected {forms_text()}")
    raise AssertionError  # unreachable


def _sample_size(ctx: _Ctx, inp: InputSpec) -> InputSpec:
    if at_steps(inp.size, 1) > MAX_SAMPLE_SIZE:
        ctx.fail("input", f"{' x '.join(map(str, inp.shape))} = {inp.size} values per sample "
                          f"are too many (at most {MAX_SAMPLE_SIZE})")
    return inp


def _check_layer_sizes(ctx: _Ctx, layer: LayerSpec) -> None:
    where = f"layers[{layer.index}]"
    size = at_steps(math.prod(layer.out_shape), 1)     # per step with steps: any
    if size > MAX_SAMPLE_SIZE:
        ctx.fail(where, f"its output has {size} values per sample, too many (at most "
                        f"{MAX_SAMPLE_SIZE})")
    for p in layer.params:
        if math.prod(p.shape) > MAX_PARAM_SIZE:    # the layer types check it first
            ctx.fail(where, f"parameter {p.name} {p.shape} is too large (at most "
                            f"{MAX_PARAM_SIZE} entries)")


def _layer(ctx: _Ctx, raw: Any, i: int, in_shape: tuple[int, ...],
           inp: InputSpec, parent: str = "") -> LayerSpec:
    """The common part (type, name) here; the options are the layer type's.
    ``parent``: the field of the block holding this layer ("layers[2]"), or
    "" at the top level."""
    where = f"{parent}.layers[{i}]" if parent else f"layers[{i}]"
    # every layer counts, those inside blocks too (a YAML alias may repeat a
    # nested block: the count bounds validation and the code alike)
    ctx.n_layers += 1
    if ctx.n_layers > MAX_LAYERS:
        ctx.fail(where, f"more than {MAX_LAYERS} layers in all, those inside blocks "
                        f"included (the generated code grows with every layer)")
    raw = ctx.mapping(raw, where)
    if "type" not in raw:
        ctx.fail(f"{where}.type", "required key is missing")
    ltype = ctx.choice(raw["type"], f"{where}.type", LAYER_TYPES, "layer type")
    if ltype not in SUPPORTED_LAYER_TYPES:
        ctx.fail(f"{where}.type", f"layer type {ltype!r} is not supported yet by "
                                  f"this version of bpgen (supported: "
                                  f"{', '.join(SUPPORTED_LAYER_TYPES)})")
    name = (ctx.identifier(raw["name"], f"{where}.name", layer=True) if "name" in raw
            else f"l{i}")
    kind = LAYER_TYPE_OBJECTS[ltype]
    kind.check_input(ctx, where, in_shape, inp)
    # e.g. token ids need an embedding first (an inner layer of a block never reads x)
    inp.check_layer(ctx, where, None if parent else i, kind)
    ctx.keys(raw, where, ("type", "name") + tuple(kind.allowed(ctx, raw, where)),
             required=kind.required)
    options, out_shape, params = kind.validate(ctx, raw, where, in_shape, inp)
    return LayerSpec(ltype, name, i, tuple(in_shape), tuple(out_shape),
                     tuple(options.items()), tuple(params))


def _loss(ctx: _Ctx, raw: Any, inp: InputSpec) -> LossSpec:
    if isinstance(raw, str):
        return LossSpec(ctx.choice(raw, "loss", tuple(LOSS_OBJECTS), "loss"))
    raw = ctx.mapping(raw, "loss")
    ctx.keys(raw, "loss", ("type", "steps"), required=("type",))
    ltype = ctx.choice(raw["type"], "loss.type", tuple(LOSS_OBJECTS), "loss")
    steps = "all"
    if "steps" in raw:
        steps = ctx.choice(raw["steps"], "loss.steps", ("all", "last"), "steps value")
    return LossSpec(ltype, steps)
