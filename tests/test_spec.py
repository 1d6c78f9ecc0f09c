"""Validation of the architecture file (bpgen.spec): every rule, data-driven."""
from __future__ import annotations

import copy
import os
import re

import numpy as np
import pytest

from bpgen.spec import SpecError, load_spec

from conftest import ROOT


def base(**changes):
    """A valid MLP; ``changes`` replace (or, with value ``DROP``, remove) keys."""
    spec = {
        "name": "net",
        "input": {"features": 4},
        "layers": [
            {"type": "dense", "units": 3, "activation": "tanh"},
            {"type": "dense", "units": 2},
        ],
        "loss": "softmax_cross_entropy",
    }
    for k, v in changes.items():
        if v is DROP:
            del spec[k]
        else:
            spec[k] = v
    return spec


DROP = object()


def with_layer(i, **changes):
    """base() with layers[i] updated (value DROP removes the key)."""
    spec = base()
    layer = spec["layers"][i]
    for k, v in changes.items():
        if v is DROP:
            del layer[k]
        else:
            layer[k] = v
    return spec


def dense(units=3, **kw):
    return {"type": "dense", "units": units, **kw}


IMAGE = {"channels": 1, "height": 4, "width": 4}
SEQ = {"features": 3, "steps": 5}


def seq(*layers, loss="mse", **changes):
    """A valid sequence network (default: one rnn layer and a dense head)."""
    if not layers:
        layers = ({"type": "rnn", "units": 4}, dense(2))
    return base(**{"input": dict(SEQ), "layers": list(layers), "loss": loss,
                    **changes})


def rec(ltype, units=4, **kw):
    return {"type": ltype, "units": units, **kw}

# (id, bad dict, field the message must name, extra text the message must contain)
BAD_DICTS = [
    # missing required keys
    ("missing-name", base(name=DROP), "name", "required"),
    ("missing-input", base(input=DROP), "input", "required"),
    ("missing-layers", base(layers=DROP), "layers", "required"),
    ("missing-loss", base(loss=DROP), "loss", "required"),
    ("missing-units", with_layer(0, units=DROP), "layers[0].units", "required"),
    ("missing-type", with_layer(1, type=DROP), "layers[1].type", "required"),
    ("missing-features", base(input={}), "input", ""),
    ("missing-image-width", base(input={"channels": 1, "height": 4}), "input", ""),
    ("missing-loss-type", base(loss={"steps": "all"}), "loss.type", "required"),
    ("missing-bptt-truncate", base(bptt={}), "bptt.truncate", "required"),
    # unknown keys
    ("unknown-top-key", base(optimizer="sgd"), "optimizer", "unknown key"),
    ("unknown-layer-key", with_layer(1, units_=4), "layers[1].units_", "unknown key"),
    ("unknown-layer-key-typo", with_layer(0, activaton="relu"),
     "layers[0].activaton", "unknown key"),
    ("unknown-flatten-key",
     base(input=IMAGE, layers=[{"type": "flatten", "units": 3}, dense(2)]),
     "layers[0].units", "unknown key"),
    ("unknown-input-key", base(input={"features": 4, "size": 3}), "input.size",
     "unknown key"),
    ("unknown-loss-key", base(loss={"type": "mse", "reduction": "sum"}),
     "loss.reduction", "unknown key"),
    ("unknown-regularization-key", base(regularization={"l1": 0.1}),
     "regularization.l1", "unknown key"),
    ("unknown-bptt-key", base(bptt={"truncate": 2, "k": 1}), "bptt.k", "unknown key"),
    # wrong types and values
    ("string-units", with_layer(0, units="32"), "layers[0].units", "positive integer"),
    ("bool-units", with_layer(0, units=True), "layers[0].units", "positive integer"),
    ("float-units", with_layer(0, units=32.0), "layers[0].units", "positive integer"),
    ("null-units", with_layer(0, units=None), "layers[0].units", "positive integer"),
    ("numpy-bool-units", with_layer(0, units=np.True_), "layers[0].units", "positive integer"),
    ("numpy-float-units", with_layer(0, units=np.float64(3.0)), "layers[0].units",
     "positive integer"),
    ("numpy-zero-units", with_layer(0, units=np.int64(0)), "layers[0].units",
     "positive integer"),
    ("zero-units", with_layer(0, units=0), "layers[0].units", "positive integer"),
    ("negative-units", with_layer(1, units=-3), "layers[1].units", "positive integer"),
    ("huge-units", with_layer(0, units=10**9), "layers[0].units", "too large"),
    ("huge-weight-matrix",
     base(input={"features": 10**6}, layers=[dense(10**6)]), "layers[0].units",
     "too large"),
    ("zero-features", base(input={"features": 0}), "input.features", "positive"),
    ("string-features", base(input={"features": "64"}), "input.features", "positive"),
    ("bool-height", base(input={**IMAGE, "height": True}), "input.height", "positive"),
    ("layers-not-a-list", base(layers={"type": "dense", "units": 2}), "layers",
     "list"),
    ("layers-a-string", base(layers="dense"), "layers", "list"),
    ("layers-empty", base(layers=[]), "layers", "at least one"),
    ("layer-not-a-mapping", base(layers=["dense"]), "layers[0]", "mapping"),
    ("input-not-a-mapping", base(input=[64]), "input", "mapping"),
    ("input-int", base(input=64), "input", "mapping"),
    ("regularization-not-a-mapping", base(regularization=0.1), "regularization",
     "mapping"),
    ("loss-a-list", base(loss=["mse"]), "loss", "mapping"),
    ("non-string-top-key", {**base(), 3: "x"}, "top level", "string"),
    # names
    ("name-with-dash", base(name="digits-mlp"), "name", "identifier"),
    ("name-leading-digit", base(name="1net"), "name", "identifier"),
    ("name-with-space", base(name="my net"), "name", "identifier"),
    ("name-empty", base(name=""), "name", "identifier"),
    ("name-not-ascii", base(name="réseau"), "name", "identifier"),
    ("name-int", base(name=3), "name", "identifier"),
    ("name-null", base(name=None), "name", "identifier"),
    ("name-keyword", base(name="class"), "name", "keyword"),
    ("name-keyword-None", base(name="None"), "name", "keyword"),
    ("name-soft-keyword", base(name="match"), "name", "keyword"),
    ("layer-name-with-dot", with_layer(0, name="hidden.1"), "layers[0].name",
     "identifier"),
    ("layer-name-with-dash", with_layer(1, name="out-layer"), "layers[1].name",
     "identifier"),
    ("layer-name-int", with_layer(1, name=1), "layers[1].name", "identifier"),
    ("layer-name-keyword", with_layer(0, name="lambda"), "layers[0].name", "keyword"),
    ("layer-name-keyword-True", with_layer(1, name="True"), "layers[1].name",
     "keyword"),
    # duplicate layer names
    ("duplicate-explicit-names",
     base(layers=[dense(3, name="h"), dense(2, name="h")]), "layers[1].name",
     "duplicate"),
    ("explicit-name-collides-with-earlier-default",
     base(layers=[dense(3), dense(2, name="l0")]), "layers[1].name", "duplicate"),
    ("explicit-name-collides-with-later-default",
     base(layers=[dense(3, name="l1"), dense(2)]), "layers[0].name",
     "default name of layers[1]"),
    # vocabularies
    ("unknown-activation", with_layer(0, activation="swish"), "layers[0].activation",
     "unknown activation"),
    ("activation-wrong-case", with_layer(0, activation="ReLU"),
     "layers[0].activation", "unknown activation"),
    ("activation-null", with_layer(1, activation=None), "layers[1].activation",
     "unknown activation"),
    ("unknown-loss", base(loss="cross_entropy"), "loss", "unknown loss"),
    ("unknown-loss-type", base(loss={"type": "hinge"}), "loss.type", "unknown loss"),
    ("unknown-dtype", base(dtype="float16"), "dtype", "unknown dtype"),
    ("dtype-not-a-string", base(dtype=64), "dtype", "unknown dtype"),
    ("unknown-layer-type", with_layer(0, type="Dense"), "layers[0].type",
     "unknown layer type"),
    ("unknown-layer-type-dropout", with_layer(1, type="dropout"), "layers[1].type",
     "unknown layer type"),
    # activation options
    ("alpha-on-tanh", with_layer(0, alpha=0.1), "layers[0].alpha", "takes no alpha"),
    ("alpha-on-identity", with_layer(1, alpha=0.1), "layers[1].alpha",
     "takes no alpha"),
    ("alpha-string", with_layer(0, activation="leaky_relu", alpha="0.1"),
     "layers[0].alpha", "number"),
    ("alpha-negative", with_layer(0, activation="leaky_relu", alpha=-0.1),
     "layers[0].alpha", "number"),
    ("elu-alpha-zero", with_layer(0, activation="elu", alpha=0), "layers[0].alpha",
     "number"),
    ("alpha-nan", with_layer(0, activation="elu", alpha=float("nan")),
     "layers[0].alpha", "finite"),
    ("alpha-huge-int", with_layer(0, activation="elu", alpha=10**400),
     "layers[0].alpha", "finite"),
    # regularization
    ("negative-l2", base(regularization={"l2": -1e-4}), "regularization.l2",
     "number"),
    ("string-l2", base(regularization={"l2": "1e-4"}), "regularization.l2", "number"),
    ("bool-l2", base(regularization={"l2": True}), "regularization.l2", "number"),
    ("null-l2", base(regularization={"l2": None}), "regularization.l2", "number"),
    ("inf-l2", base(regularization={"l2": float("inf")}), "regularization.l2",
     "finite"),
    ("huge-int-l2", base(regularization={"l2": 10**400}), "regularization.l2",
     "finite"),
    # bptt
    ("bptt-on-mlp", base(bptt={"truncate": 5}), "bptt", "recurrent"),
    ("bptt-zero-truncate", base(bptt={"truncate": 0}), "bptt.truncate", "positive"),
    ("bptt-not-a-mapping", base(bptt=5), "bptt", "mapping"),
    # loss options
    ("loss-steps-on-features", base(loss={"type": "mse", "steps": "last"}),
     "loss.steps", "sequence"),
    ("loss-bad-steps", base(loss={"type": "mse", "steps": "first"}), "loss.steps",
     "unknown steps"),
    ("softmax-one-unit", base(layers=[dense(1)]), "loss", "at least 2"),
    # sequence inputs
    ("sequence-input-bad-steps", base(input={"features": 4, "steps": 0}),
     "input.steps", "positive"),
    ("sequence-input-negative-steps", seq(input={"features": 3, "steps": -2}),
     "input.steps", "positive"),
    ("sequence-input-string-steps", seq(input={"features": 3, "steps": "5"}),
     "input.steps", "positive"),
    ("sequence-input-bool-steps", seq(input={"features": 3, "steps": True}),
     "input.steps", "positive"),
    ("sequence-input-float-steps", seq(input={"features": 3, "steps": 5.0}),
     "input.steps", "positive"),
    ("sequence-input-zero-features", seq(input={"features": 0, "steps": 5}),
     "input.features", "positive"),
    ("sequence-input-steps-without-features", seq(input={"steps": 5}), "input", ""),
    ("sequence-input-steps-with-image", seq(input={**IMAGE, "steps": 5}),
     "input", "expected"),
    # recurrent layers: where they may go
    *[
        (f"{t}-on-features-input", base(layers=[rec(t), dense(2)]), "layers[0]",
         "sequence input")
        for t in ("rnn", "lstm", "gru", "birnn")
    ],
    ("rnn-on-features-input-keeps-activation", with_layer(0, type="rnn"), "layers[0]",
     "sequence input"),
    ("lstm-after-dense-on-features",
     base(layers=[dense(3), rec("lstm"), dense(2)]), "layers[1]", "sequence input"),
    *[
        (f"{t}-on-image-input",
         base(input=IMAGE, layers=[rec(t), {"type": "flatten"}, dense(2)]),
         "layers[0]", "sequence input")
        for t in ("rnn", "lstm", "gru", "birnn")
    ],
    ("gru-after-flatten-on-image",
     base(input=IMAGE, layers=[{"type": "flatten"}, rec("gru"), dense(2)]),
     "layers[1]", "sequence input"),
    ("rnn-after-flatten-on-sequence",
     seq({"type": "flatten"}, rec("rnn"), dense(2)), "layers[1]", "sequence input"),
    # recurrent layers: cells and options
    ("birnn-unknown-cell", seq(rec("birnn", cell="transformer"), dense(2)),
     "layers[0].cell", "unknown cell"),
    ("birnn-cell-wrong-case", seq(rec("birnn", cell="LSTM"), dense(2)),
     "layers[0].cell", "unknown cell"),
    ("birnn-cell-birnn", seq(rec("birnn", cell="birnn"), dense(2)),
     "layers[0].cell", "unknown cell"),
    ("birnn-cell-null", seq(rec("birnn", cell=None), dense(2)),
     "layers[0].cell", "unknown cell"),
    *[
        (f"cell-on-{t}", seq(rec(t, cell="rnn"), dense(2)), "layers[0].cell",
         "unknown key")
        for t in ("rnn", "lstm", "gru")
    ],
    *[
        (f"activation-on-{t}", seq(rec(t, activation="relu"), dense(2)),
         "layers[0].activation", "unknown key")
        for t in ("lstm", "gru")
    ],
    *[
        (f"tanh-activation-on-{t}", seq(rec(t, activation="tanh"), dense(2)),
         "layers[0].activation", "unknown key")
        for t in ("lstm", "gru")
    ],
    *[
        (f"alpha-on-{t}", seq(rec(t, alpha=0.1), dense(2)), "layers[0].alpha",
         "unknown key")
        for t in ("lstm", "gru")
    ],
    *[
        (f"activation-on-birnn-{c}",
         seq(rec("birnn", cell=c, activation="relu"), dense(2)),
         "layers[0].activation", "unknown key")
        for c in ("lstm", "gru")
    ],
    ("alpha-on-birnn-lstm", seq(rec("birnn", cell="lstm", alpha=0.1), dense(2)),
     "layers[0].alpha", "unknown key"),
    ("rnn-unknown-activation", seq(rec("rnn", activation="swish"), dense(2)),
     "layers[0].activation", "unknown activation"),
    ("birnn-rnn-unknown-activation",
     seq(rec("birnn", cell="rnn", activation="Tanh"), dense(2)),
     "layers[0].activation", "unknown activation"),
    ("rnn-alpha-on-tanh", seq(rec("rnn", alpha=0.1), dense(2)), "layers[0].alpha",
     "takes no alpha"),
    ("birnn-default-cell-alpha-on-relu",
     seq(rec("birnn", activation="relu", alpha=0.1), dense(2)), "layers[0].alpha",
     "takes no alpha"),
    ("rnn-negative-alpha", seq(rec("rnn", activation="leaky_relu", alpha=-1), dense(2)),
     "layers[0].alpha", "number"),
    ("rnn-elu-alpha-zero", seq(rec("rnn", activation="elu", alpha=0), dense(2)),
     "layers[0].alpha", "number"),
    ("unknown-rnn-key", seq(rec("rnn", hidden=3), dense(2)), "layers[0].hidden",
     "unknown key"),
    ("lstm-filters-key", seq(rec("lstm", filters=3), dense(2)), "layers[0].filters",
     "unknown key"),
    # recurrent layers: units
    *[
        (f"{t}-missing-units", seq({"type": t}, dense(2)), "layers[0].units", "required")
        for t in ("rnn", "lstm", "gru", "birnn")
    ],
    ("birnn-lstm-missing-units", seq({"type": "birnn", "cell": "lstm"}, dense(2)),
     "layers[0].units", "required"),
    *[
        (f"{t}-units-{label}", seq(rec(t, units=u), dense(2)), "layers[0].units",
         "positive integer")
        for t in ("rnn", "lstm", "gru", "birnn")
        for label, u in (("zero", 0), ("negative", -4), ("string", "4"),
                         ("float", 4.0), ("bool", True), ("null", None))
    ],
    ("second-recurrent-bad-units", seq(rec("lstm"), rec("gru", units=0), dense(2)),
     "layers[1].units", "positive integer"),
    ("rnn-huge-units", seq(rec("rnn", units=10**9), dense(2)), "layers[0].units",
     "too large"),
    ("lstm-huge-weight-matrix", seq(rec("lstm", units=6000), dense(2)),
     "layers[0].units", "too large"),
    ("recurrent-duplicate-names",
     seq(rec("lstm", name="enc"), rec("gru", name="enc"), dense(2)),
     "layers[1].name", "duplicate"),
    ("recurrent-name-keyword", seq(rec("gru", name="def"), dense(2)),
     "layers[0].name", "keyword"),
    # bptt
    ("bptt-truncate-zero", seq(bptt={"truncate": 0}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-negative", seq(bptt={"truncate": -3}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-float", seq(bptt={"truncate": 2.0}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-fraction", seq(bptt={"truncate": 2.5}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-string", seq(bptt={"truncate": "2"}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-bool", seq(bptt={"truncate": True}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-null", seq(bptt={"truncate": None}), "bptt.truncate",
     "positive integer"),
    ("bptt-truncate-huge", seq(bptt={"truncate": 10**9}), "bptt.truncate",
     "too large"),
    ("bptt-missing-truncate-on-rnn", seq(bptt={}), "bptt.truncate", "required"),
    ("bptt-unknown-key-on-rnn", seq(bptt={"truncate": 2, "overlap": 1}),
     "bptt.overlap", "unknown key"),
    ("bptt-list", seq(bptt=[2]), "bptt", "mapping"),
    ("bptt-on-sequence-without-recurrent-layer", seq(dense(3), dense(2),
                                                     bptt={"truncate": 2}),
     "bptt", "recurrent"),
    # loss steps on sequences
    ("loss-steps-last-on-flattened-sequence",
     seq({"type": "flatten"}, dense(2), loss={"type": "mse", "steps": "last"}),
     "loss.steps", "sequence"),
    ("loss-steps-last-on-image",
     base(input=IMAGE, layers=[{"type": "flatten"}, dense(2)],
          loss={"type": "mse", "steps": "last"}), "loss.steps", "sequence"),
    ("loss-unknown-steps-on-sequence", seq(loss={"type": "mse", "steps": "first"}),
     "loss.steps", "unknown steps"),
    ("loss-steps-wrong-case", seq(loss={"type": "mse", "steps": "LAST"}),
     "loss.steps", "unknown steps"),
    ("loss-steps-int", seq(loss={"type": "mse", "steps": 1}), "loss.steps",
     "unknown steps"),
    ("loss-steps-null", seq(loss={"type": "mse", "steps": None}), "loss.steps",
     "unknown steps"),
    ("softmax-one-unit-per-step-after-lstm",
     seq(rec("lstm"), dense(1), loss="softmax_cross_entropy"), "loss", "at least 2"),
    ("softmax-one-unit-rnn-output",
     seq(rec("rnn", units=1), loss="softmax_cross_entropy"), "loss", "at least 2"),
    # image layers need an image (supported since convolutions landed)
    *[
        (f"{t}-on-features", with_layer(0, type=t), "layers[0]", "image input")
        for t in ("conv2d", "maxpool2d", "avgpool2d")
    ],
    ("conv2d-kernel-larger-than-image",
     base(input=IMAGE, layers=[{"type": "conv2d", "filters": 2, "kernel": 30},
                               {"type": "flatten"}, dense(2)]),
     "layers[0]", "larger than"),
    # shapes
    ("dense-on-image", base(input=IMAGE, layers=[dense(2)]), "layers[0]", "flatten"),
    ("dense-on-image-after-ok-name",
     base(input=IMAGE, layers=[dense(2, name="fc", activation="relu")]), "layers[0]",
     "flatten"),
    # top level
    ("top-level-list", [base()], "top level", "mapping"),
    ("top-level-null", None, "top level", "mapping"),
    ("top-level-string", "name: net", "top level", "mapping"),
]


def _check(exc_info, field, extra, source="<dict>"):
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, ValueError)
    assert msg.startswith(f"{source}: "), msg
    # the field is named as a whole, e.g. "layers[0].units:" not "layers[0].units_"
    assert re.search(rf"(^|: ){re.escape(field)}: ", msg), (field, msg)
    assert extra.lower() in msg.lower(), (extra, msg)
    assert "\n" not in msg, msg


@pytest.mark.parametrize("data, field, extra",
                         [pytest.param(d, f, e, id=i) for i, d, f, e in BAD_DICTS])
def test_bad_dict(data, field, extra):
    original = copy.deepcopy(data)
    with pytest.raises(SpecError) as exc_info:
        load_spec(data) if isinstance(data, dict) else _validate(data)
    _check(exc_info, field, extra)
    assert data == original  # validation never modifies its input


def test_softmax_on_one_step_sequence_is_accepted():
    """The unit count is the last axis of a sequence output (T, K), not T."""
    spec = load_spec(seq(rec("rnn", units=3), input={"features": 3, "steps": 1},
                         loss="softmax_cross_entropy"))
    assert spec.output_shape == (1, 3)


def _validate(data):
    from bpgen.spec import validate
    return validate(data)


def test_spec_error_is_value_error():
    assert issubclass(SpecError, ValueError)
    with pytest.raises(ValueError):
        load_spec(base(loss="nope"))


def test_load_spec_refuses_other_types():
    with pytest.raises(SpecError, match=r"^spec: expected a path \(to a YAML file\), a dict or "
                                        r"a Spec, got int$"):
        load_spec(42)


# --------------------------------------------------------------------------
# YAML files

GOOD_YAML = """\
name: digits_mlp
dtype: float64
input: {features: 64}
layers:
  - {type: dense, units: 32, activation: tanh}
  - {type: dense, units: 10}
loss: softmax_cross_entropy
regularization: {l2: 1.0e-4}
"""

GOOD_SEQ_YAML = """\
name: tagger
input: {features: 6, steps: 12}
layers:
  - {type: birnn, cell: lstm, units: 5, name: enc}
  - {type: gru, units: 8}
  - {type: dense, units: 3}
loss: {type: softmax_cross_entropy, steps: last}
bptt: {truncate: 4}
"""

# (id, file text, field the message must name, extra text)
BAD_YAML = [
    ("string-units", GOOD_YAML.replace("units: 32", "units: '32'"),
     "layers[0].units", "positive integer"),
    ("float-units", GOOD_YAML.replace("units: 32", "units: 32.5"),
     "layers[0].units", "positive integer"),
    ("bool-units", GOOD_YAML.replace("units: 10", "units: yes"),
     "layers[1].units", "positive integer"),
    ("unknown-activation", GOOD_YAML.replace("tanh", "tahn"),
     "layers[0].activation", "unknown activation"),
    ("keyword-name", GOOD_YAML.replace("name: digits_mlp", "name: import"),
     "name", "keyword"),
    ("missing-loss", GOOD_YAML.replace("loss: softmax_cross_entropy\n", ""),
     "loss", "required"),
    ("unknown-top-key", GOOD_YAML + "optimiser: adam\n", "optimiser", "unknown key"),
    ("l2-without-dot-is-a-string", GOOD_YAML.replace("1.0e-4", "1e-4"),
     "regularization.l2", "number"),
    ("lstm-on-features", GOOD_YAML.replace("type: dense, units: 32, activation: tanh",
                                           "type: lstm, units: 32"),
     "layers[0]", "sequence input"),
    ("conv2d", GOOD_YAML.replace("type: dense, units: 32, activation: tanh",
                                 "type: conv2d, filters: 2, kernel: 3"),
     "layers[0]", "image input"),
    ("gru-activation", GOOD_SEQ_YAML.replace("type: gru, units: 8",
                                             "type: gru, units: 8, activation: relu"),
     "layers[1].activation", "unknown key"),
    ("birnn-unknown-cell", GOOD_SEQ_YAML.replace("cell: lstm", "cell: elman"),
     "layers[0].cell", "unknown cell"),
    ("birnn-lstm-alpha", GOOD_SEQ_YAML.replace("cell: lstm", "cell: lstm, alpha: 0.1"),
     "layers[0].alpha", "unknown key"),
    ("recurrent-missing-units", GOOD_SEQ_YAML.replace("units: 8", "name: dec"),
     "layers[1].units", "required"),
    ("recurrent-string-units", GOOD_SEQ_YAML.replace("units: 8", "units: '8'"),
     "layers[1].units", "positive integer"),
    ("bptt-truncate-zero", GOOD_SEQ_YAML.replace("truncate: 4", "truncate: 0"),
     "bptt.truncate", "positive integer"),
    ("bptt-truncate-float", GOOD_SEQ_YAML.replace("truncate: 4", "truncate: 4.0"),
     "bptt.truncate", "positive integer"),
    ("bptt-truncate-negative", GOOD_SEQ_YAML.replace("truncate: 4", "truncate: -4"),
     "bptt.truncate", "positive integer"),
    ("unknown-steps", GOOD_SEQ_YAML.replace("steps: last", "steps: final"),
     "loss.steps", "unknown steps"),
    ("steps-last-on-mlp", GOOD_YAML.replace("loss: softmax_cross_entropy",
                                            "loss: {type: mse, steps: last}"),
     "loss.steps", "sequence"),
    ("recurrent-on-image",
     GOOD_SEQ_YAML.replace("{features: 6, steps: 12}",
                           "{channels: 1, height: 6, width: 12}"),
     "layers[0]", "sequence input"),
    ("dense-on-image", GOOD_YAML.replace("{features: 64}",
                                         "{channels: 1, height: 8, width: 8}"),
     "layers[0]", "flatten"),
    ("bptt-on-mlp", GOOD_YAML + "bptt: {truncate: 3}\n", "bptt", "recurrent"),
    ("top-level-list", "- name: net\n- layers: []\n", "top level", "mapping"),
    ("empty-file", "", "top level", "mapping"),
    ("invalid-yaml-unclosed-flow", GOOD_YAML.replace("{features: 64}", "{features: 64"),
     "line 4", "invalid YAML"),
    ("invalid-yaml-bad-indent", "name: net\n  input: {features: 4}\n layers: []\n",
     "line 2", "invalid YAML"),
    ("invalid-yaml-tab", "name: net\n\tinput: 3\n", "line 2", "invalid YAML"),
    ("invalid-yaml-python-tag", "name: !!python/object:os.system net\n", "line 1",
     "invalid YAML"),
    ("duplicate-yaml-key", GOOD_YAML.replace("units: 32,", "units: 32, units: 16,"),
     "line 5", "duplicate key 'units'"),
    ("duplicate-top-key", GOOD_YAML + "name: other\n", "line 9",
     "duplicate key 'name'"),
]


@pytest.mark.parametrize("text, field, extra",
                         [pytest.param(t, f, e, id=i) for i, t, f, e in BAD_YAML])
def test_bad_yaml_file(tmp_path, text, field, extra):
    path = tmp_path / "arch.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as exc_info:
        load_spec(path)
    _check(exc_info, field, extra, source=str(path))
    with pytest.raises(SpecError) as exc_info:     # a str path works alike
        load_spec(str(path))
    _check(exc_info, field, extra, source=str(path))


@pytest.mark.parametrize("make, extra", [
    pytest.param(lambda p: p / "missing.yaml", "cannot read", id="nonexistent"),
    pytest.param(lambda p: p, "cannot read", id="directory"),
    pytest.param(lambda p: (p / "latin1.yaml").write_bytes(b"name: r\xe9seau\n")
                 and p / "latin1.yaml", "UTF-8", id="not-utf8"),
])
def test_unreadable_file(tmp_path, make, extra):
    path = make(tmp_path)
    with pytest.raises(SpecError) as exc_info:
        load_spec(path)
    msg = str(exc_info.value)
    assert msg.startswith(f"{path}: "), msg
    assert extra in msg, msg


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(
        "name: net\ninput: {features: 4}\n"
        "layers:\n  - &h {type: dense, units: 3, activation: relu}\n"
        "  - {<<: *h, units: 2, activation: identity}\n"
        "loss: mse\n", encoding="utf-8")
    spec = load_spec(path)
    assert [(lay.units, lay.activation) for lay in spec.layers] == [
        (3, "relu"), (2, "identity")]


# --------------------------------------------------------------------------
# valid architectures

def test_good_yaml_file(tmp_path):
    path = tmp_path / "digits.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    spec = load_spec(path)
    assert spec.name == "digits_mlp"
    assert spec.source == str(path)
    assert spec.l2 == pytest.approx(1e-4)
    assert spec.param_shapes == {"l0.W": (64, 32), "l0.b": (32,),
                                 "l1.W": (32, 10), "l1.b": (10,)}
    assert spec.output_shape == (10,)


def test_defaults():
    spec = load_spec(base())
    assert spec.dtype == "float64"
    assert spec.l2 == 0.0
    assert spec.truncate is None
    assert spec.input.kind == "features" and spec.input.shape == (4,)
    assert [lay.name for lay in spec.layers] == ["l0", "l1"]
    assert [lay.activation for lay in spec.layers] == ["tanh", "identity"]
    assert [lay.alpha for lay in spec.layers] == [None, None]
    assert spec.loss.type == "softmax_cross_entropy"
    assert spec.loss.steps == "all"
    assert spec.source == "<dict>"


def test_float32_dtype():
    assert load_spec(base(dtype="float32")).dtype == "float32"


@pytest.mark.parametrize("activation, given, expected", [
    ("leaky_relu", None, 0.01),
    ("elu", None, 1.0),
    ("leaky_relu", 0.2, 0.2),
    ("leaky_relu", 0, 0.0),
    ("elu", 2, 2.0),
])
def test_alpha(activation, given, expected):
    layer = dense(3, activation=activation)
    if given is not None:
        layer["alpha"] = given
    spec = load_spec(base(layers=[layer, dense(2)]))
    assert spec.layers[0].alpha == expected
    assert isinstance(spec.layers[0].alpha, float)


@pytest.mark.parametrize("activation", [
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "silu",
    "gelu"])
def test_every_activation_accepted(activation):
    spec = load_spec(base(layers=[dense(3, activation=activation), dense(2)]))
    assert spec.layers[0].activation == activation


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy",
                                  "sigmoid_binary_cross_entropy"])
def test_every_loss_accepted(loss):
    assert load_spec(base(loss=loss)).loss.type == loss
    assert load_spec(base(loss={"type": loss})).loss.type == loss


def test_loss_as_mapping():
    spec = load_spec(base(loss={"type": "mse"}))
    assert spec.loss.type == "mse" and spec.loss.steps == "all"
    assert spec == load_spec(base(loss="mse"))


def test_param_shapes_order_and_names():
    spec = load_spec(base(
        input={"features": 5},
        layers=[dense(4, name="hidden"), dense(3), dense(2, name="out")]))
    assert list(spec.param_shapes.items()) == [
        ("hidden.W", (5, 4)), ("hidden.b", (4,)),
        ("l1.W", (4, 3)), ("l1.b", (3,)),
        ("out.W", (3, 2)), ("out.b", (2,)),
    ]


def test_explicit_default_style_name_at_own_position():
    spec = load_spec(base(layers=[dense(3, name="l0"), dense(2, name="l5")]))
    assert [lay.name for lay in spec.layers] == ["l0", "l5"]


def test_image_flatten_dense():
    spec = load_spec(base(
        input={"channels": 3, "height": 4, "width": 5},
        layers=[{"type": "flatten"}, dense(7, activation="relu"), dense(2)]))
    assert spec.input.kind == "image" and spec.input.shape == (3, 4, 5)
    assert spec.layers[0].type == "flatten"
    assert spec.layers[0].out_shape == (60,)
    assert spec.layers[0].params == ()
    assert spec.param_shapes == {"l1.W": (60, 7), "l1.b": (7,),
                                 "l2.W": (7, 2), "l2.b": (2,)}
    assert spec.output_shape == (2,)


def test_regularization():
    assert load_spec(base(regularization={"l2": 0})).l2 == 0.0
    assert load_spec(base(regularization={"l2": 3})).l2 == 3.0
    assert load_spec(base(regularization={})).l2 == 0.0


def _numpy_scalars(data):
    """``data`` with every int a NumPy integer and every float a NumPy float32."""
    if isinstance(data, dict):
        return {k: _numpy_scalars(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_numpy_scalars(v) for v in data]
    if isinstance(data, int) and not isinstance(data, bool):
        return (np.int64, np.int32, np.uint16)[data % 3](data)
    if isinstance(data, float):
        return np.float32(data)
    return data


@pytest.mark.parametrize("arch", [
    base(regularization={"l2": 0.5}),
    seq({"type": "lstm", "units": 4}, dense(2), bptt={"truncate": 2}),
    base(input=IMAGE, layers=[{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1,
                               "stride": 1}, {"type": "maxpool2d", "size": 2},
                              {"type": "flatten"}, dense(2)]),
])
def test_numpy_scalars_are_accepted_as_python_numbers(arch):
    """Sizes of any integral type that converts exactly (NumPy's integers), and
    NumPy floats for l2, give the same Spec as Python's int and float."""
    spec = load_spec(_numpy_scalars(arch))
    assert spec == load_spec(arch)
    assert spec.content_hash() == load_spec(arch).content_hash()
    assert all(type(d) is int for shape in spec.param_shapes.values() for d in shape)
    assert type(spec.l2) is float


def test_content_hash_is_stable_and_ignores_source(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    from_file = load_spec(path)
    import yaml
    from_dict = load_spec(yaml.safe_load(GOOD_YAML))
    assert from_file == from_dict
    assert from_file.content_hash() == from_dict.content_hash()
    other = yaml.safe_load(GOOD_YAML)
    other["layers"][0]["units"] = 33
    assert load_spec(other).content_hash() != from_file.content_hash()


# --------------------------------------------------------------------------
# valid recurrent architectures

F_, T_ = SEQ["features"], SEQ["steps"]


def _cell_shapes(cell, fan_in, h, prefix=""):
    g = {"rnn": 1, "lstm": 4, "gru": 3}[cell] * h
    if cell == "gru":
        return [(f"{prefix}Wx", (fan_in, g)), (f"{prefix}Wh", (h, g)),
                (f"{prefix}bx", (g,)), (f"{prefix}bh", (g,))]
    return [(f"{prefix}Wx", (fan_in, g)), (f"{prefix}Wh", (h, g)), (f"{prefix}b", (g,))]


def test_sequence_input():
    spec = load_spec(seq())
    assert spec.input.kind == "sequence"
    assert spec.input.shape == (T_, F_)
    assert spec.input.size == T_ * F_
    assert spec.loss.steps == "all" and spec.truncate is None


def test_rnn_defaults_and_shapes():
    spec = load_spec(seq(rec("rnn", units=4), dense(2)))
    lay = spec.layers[0]
    assert (lay.type, lay.cell, lay.activation, lay.alpha, lay.units) == (
        "rnn", "rnn", "tanh", None, 4)
    assert lay.in_shape == (T_, F_) and lay.out_shape == (T_, 4)
    assert list(spec.param_shapes.items()) == [
        ("l0.Wx", (F_, 4)), ("l0.Wh", (4, 4)), ("l0.b", (4,)),
        ("l1.W", (4, 2)), ("l1.b", (2,))]


def test_lstm_shapes():
    spec = load_spec(seq(rec("lstm", units=5), dense(2)))
    assert spec.layers[0].cell == "lstm"
    assert spec.layers[0].out_shape == (T_, 5)
    assert list(spec.param_shapes.items()) == [
        ("l0.Wx", (F_, 20)), ("l0.Wh", (5, 20)), ("l0.b", (20,)),
        ("l1.W", (5, 2)), ("l1.b", (2,))]


def test_gru_shapes():
    spec = load_spec(seq(rec("gru", units=5), dense(2)))
    assert spec.layers[0].cell == "gru"
    assert spec.layers[0].out_shape == (T_, 5)
    assert list(spec.param_shapes.items()) == [
        ("l0.Wx", (F_, 15)), ("l0.Wh", (5, 15)), ("l0.bx", (15,)), ("l0.bh", (15,)),
        ("l1.W", (5, 2)), ("l1.b", (2,))]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_birnn_keys_and_shapes(cell):
    spec = load_spec(seq(rec("birnn", units=3, cell=cell), dense(2)))
    lay = spec.layers[0]
    assert lay.type == "birnn" and lay.cell == cell
    assert lay.out_shape == (T_, 6)
    expected = ([(f"l0.{k}", s) for k, s in _cell_shapes(cell, F_, 3, "fwd.")]
                + [(f"l0.{k}", s) for k, s in _cell_shapes(cell, F_, 3, "bwd.")]
                + [("l1.W", (6, 2)), ("l1.b", (2,))])
    assert list(spec.param_shapes.items()) == expected
    if cell == "gru":
        assert list(spec.param_shapes)[:8] == [
            "l0.fwd.Wx", "l0.fwd.Wh", "l0.fwd.bx", "l0.fwd.bh",
            "l0.bwd.Wx", "l0.bwd.Wh", "l0.bwd.bx", "l0.bwd.bh"]


def test_birnn_default_cell_is_rnn_with_tanh():
    spec = load_spec(seq(rec("birnn", units=3), dense(2)))
    assert spec.layers[0].cell == "rnn"
    assert spec.layers[0].activation == "tanh"
    assert spec == load_spec(seq(rec("birnn", units=3, cell="rnn"), dense(2)))


@pytest.mark.parametrize("ltype, extra", [("rnn", {}), ("birnn", {}),
                                          ("birnn", {"cell": "rnn"})])
@pytest.mark.parametrize("activation, alpha, expected", [
    ("relu", None, None), ("sigmoid", None, None), ("identity", None, None),
    ("leaky_relu", None, 0.01), ("leaky_relu", 0.2, 0.2), ("elu", 0.5, 0.5)])
def test_rnn_cell_activations(ltype, extra, activation, alpha, expected):
    layer = rec(ltype, activation=activation, **extra)
    if alpha is not None:
        layer["alpha"] = alpha
    lay = load_spec(seq(layer, dense(2))).layers[0]
    assert lay.activation == activation and lay.alpha == expected


def test_dense_after_recurrent_applies_at_every_step():
    spec = load_spec(seq(rec("gru", units=4), dense(7, activation="relu"), dense(2)))
    assert [lay.out_shape for lay in spec.layers] == [(T_, 4), (T_, 7), (T_, 2)]
    assert spec.layers[1].in_shape == (T_, 4)
    assert spec.param_shapes["l1.W"] == (4, 7)
    assert spec.param_shapes["l2.W"] == (7, 2)
    assert spec.output_shape == (T_, 2)


def test_recurrent_output_without_dense():
    spec = load_spec(seq(rec("lstm", units=3)))
    assert spec.output_shape == (T_, 3)


def test_dense_directly_on_sequence():
    spec = load_spec(seq(dense(4, activation="tanh"), dense(2),
                         loss={"type": "mse", "steps": "last"}))
    assert spec.layers[0].in_shape == (T_, F_)
    assert spec.output_shape == (T_, 2)
    assert spec.param_shapes == {"l0.W": (F_, 4), "l0.b": (4,),
                                 "l1.W": (4, 2), "l1.b": (2,)}


def test_stacked_named_recurrent_layers():
    spec = load_spec(seq(rec("lstm", units=4, name="enc"),
                         rec("birnn", units=2, cell="gru", name="mid"),
                         rec("rnn", units=3, activation="relu"),
                         dense(2, name="head")))
    assert [lay.name for lay in spec.layers] == ["enc", "mid", "l2", "head"]
    assert [lay.out_shape for lay in spec.layers] == [(T_, 4), (T_, 4), (T_, 3),
                                                      (T_, 2)]
    assert spec.param_shapes["mid.fwd.Wx"] == (4, 6)
    assert spec.param_shapes["l2.Wx"] == (4, 3)
    assert spec.param_shapes["head.W"] == (3, 2)


def test_flatten_on_sequence():
    spec = load_spec(seq({"type": "flatten"}, dense(2)))
    assert spec.layers[0].out_shape == (T_ * F_,)
    assert spec.output_shape == (2,)


@pytest.mark.parametrize("steps", ["all", "last"])
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy",
                                  "sigmoid_binary_cross_entropy"])
def test_loss_steps(loss, steps):
    spec = load_spec(seq(loss={"type": loss, "steps": steps}))
    assert spec.loss.type == loss and spec.loss.steps == steps


@pytest.mark.parametrize("k", [1, 2, T_, 10 * T_])
def test_bptt_truncate(k):
    assert load_spec(seq(bptt={"truncate": k})).truncate == k


def test_content_hash_sees_recurrent_options():
    hashes = {load_spec(d).content_hash() for d in [
        seq(),
        seq(rec("rnn", activation="relu"), dense(2)),
        seq(rec("lstm"), dense(2)),
        seq(rec("gru"), dense(2)),
        seq(rec("birnn"), dense(2)),
        seq(rec("birnn", cell="lstm"), dense(2)),
        seq(bptt={"truncate": 2}),
        seq(bptt={"truncate": 3}),
        seq(loss={"type": "mse", "steps": "last"}),
        seq(input={"features": 3, "steps": 6}),
    ]}
    assert len(hashes) == 10


def test_good_sequence_yaml_file(tmp_path):
    path = tmp_path / "tagger.yaml"
    path.write_text(GOOD_SEQ_YAML, encoding="utf-8")
    spec = load_spec(path)
    assert spec.input.shape == (12, 6)
    assert spec.truncate == 4
    assert spec.loss.steps == "last"
    assert [lay.name for lay in spec.layers] == ["enc", "l1", "l2"]
    assert list(spec.param_shapes.items()) == [
        ("enc.fwd.Wx", (6, 20)), ("enc.fwd.Wh", (5, 20)), ("enc.fwd.b", (20,)),
        ("enc.bwd.Wx", (6, 20)), ("enc.bwd.Wh", (5, 20)), ("enc.bwd.b", (20,)),
        ("l1.Wx", (10, 24)), ("l1.Wh", (8, 24)), ("l1.bx", (24,)), ("l1.bh", (24,)),
        ("l2.W", (8, 3)), ("l2.b", (3,))]
    assert spec.output_shape == (12, 3)


@pytest.mark.parametrize("path", ["examples/tiny_transformer.yaml", "examples/digits_cnn.yaml",
                                  "examples/sine_lstm.yaml"])
def test_a_spec_pickles_and_copies(path):
    """A Spec goes to other processes (Dask workers) by pickle: it comes back
    equal (a LayerSpec's option lookup must not run before its fields exist)."""
    import pickle
    spec = load_spec(os.path.join(ROOT, path))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert copy.deepcopy(spec) == spec
