"""Parameters on disk: ``save_params(path, params)`` / ``load_params(path)``
of every generated module (an .npz with the architecture's hash, dtype and
description), over architectures x backends x dtypes; files of another
architecture, wrong paths and files that are no .npz; ``bpgen check`` and
``bpgen spectrum`` with ``--params``."""
import os
import zipfile

import numpy as np
import pytest

import bpgen
from bpgen.cli import main
from bpgen.spec import load_spec

from conftest import mlp

SEQ = {"name": "pf_lstm", "input": {"features": 2, "steps": 3},
       "layers": [{"type": "lstm", "units": 3}, {"type": "dense", "units": 2}],
       "loss": {"type": "mse", "steps": "last"}}
CONV = {"name": "pf_conv", "input": {"channels": 1, "height": 5, "width": 5},
        "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "activation": "relu"},
                   {"type": "maxpool2d", "size": 3}, {"type": "flatten"},
                   {"type": "dense", "units": 3}],
        "loss": "softmax_cross_entropy"}
TOKENS = {"name": "pf_tf", "input": {"tokens": 5, "steps": 3},
          "layers": [{"type": "embedding", "units": 4, "positions": True},
                     {"type": "block", "residual": True,
                      "layers": [{"type": "layernorm"}, {"type": "attention", "heads": 2}]},
                     {"type": "dense", "units": 5}],
          "loss": "softmax_cross_entropy"}
ARCHS = {"mlp": mlp(name="pf_mlp", l2=1e-3), "lstm": SEQ, "conv": CONV, "transformer": TOKENS}


def _with(arch, **changes):
    return {**arch, **changes}


def _perturbed(mod, seed=1):
    """Parameters with every entry distinct from init_params' (biases too)."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape)).astype(mod.DTYPE)
            for k, v in mod.init_params(seed).items()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("aid", list(ARCHS))
def test_round_trip(builder, tmp_path, aid, backend, dtype):
    mod = builder(_with(ARCHS[aid], dtype=dtype), backend)
    params = _perturbed(mod)
    path = tmp_path / "params.bin"          # written under exactly this name
    mod.save_params(path, params)
    assert sorted(os.listdir(tmp_path)) == ["params.bin"]
    loaded = mod.load_params(str(path))
    assert list(loaded) == list(mod.PARAM_SHAPES)
    for key, value in loaded.items():
        assert value.dtype == mod.DTYPE and value.flags.c_contiguous
        assert np.array_equal(value, params[key])
    # the module runs on what it loaded, and the other backend takes the file too
    other = builder(_with(ARCHS[aid], dtype=dtype), "c" if backend == "numpy" else "numpy")
    assert other.ARCHITECTURE_HASH == mod.ARCHITECTURE_HASH
    again = other.load_params(path)
    assert all(np.array_equal(again[k], params[k]) for k in params)
    # saving refuses what the module's functions refuse
    with pytest.raises(ValueError, match="missing key"):
        mod.save_params(path, {k: v for k, v in params.items() if k != next(iter(params))})
    first = next(iter(params))
    with pytest.raises(ValueError, match=rf"params\['{first}'\]: expected shape"):
        mod.save_params(path, {**params, first: np.zeros((1, 1), mod.DTYPE)})
    assert sorted(os.listdir(tmp_path)) == ["params.bin"]   # no temporary left behind


def test_hash_is_the_architecture_without_its_name(builder):
    base = ARCHS["mlp"]
    mod = builder(base, "numpy")
    assert mod.ARCHITECTURE_HASH == load_spec(base).architecture_hash()
    assert builder(_with(base, name="pf_renamed"), "numpy").ARCHITECTURE_HASH \
        == mod.ARCHITECTURE_HASH
    for changed in (_with(base, dtype="float32"), _with(base, regularization={"l2": 1e-2}),
                    _with(base, loss="softmax_cross_entropy")):
        assert builder(changed, "numpy").ARCHITECTURE_HASH != mod.ARCHITECTURE_HASH


def test_renamed_copy_loads(builder, tmp_path):
    # the renamed copy writes (NumPy), the C module test_bad_files builds reads
    mod = builder(_with(ARCHS["mlp"], name="pf_twin"), "numpy")
    params = _perturbed(mod)
    mod.save_params(tmp_path / "p.npz", params)
    twin = builder(ARCHS["mlp"], "c")
    loaded = twin.load_params(tmp_path / "p.npz")
    assert all(np.array_equal(loaded[k], params[k]) for k in params)


def _hidden(units=5, activation="tanh"):
    arch = ARCHS["mlp"]
    layers = [dict(arch["layers"][0], units=units, activation=activation)] + arch["layers"][1:]
    return _with(arch, layers=layers)


# another architecture -> (what the message must name)
WRONG = {
    "shapes": (_hidden(units=6), [r"shapes: 'l0.W' \(4, 5\) in the file, \(4, 6\) here",
                                  r"'l0.b' \(5,\) in the file, \(6,\) here",
                                  r"layers\[0\].units: 5 in the file, 6 here"]),
    "activation": (_hidden(activation="relu"),
                   [r'layers\[0\].activation: "tanh" in the file, "relu" here']),
    "dtype": (_with(ARCHS["mlp"], dtype="float32"),
              ["dtype: float64 in the file, float32 here"]),
    "l2": (_with(ARCHS["mlp"], regularization={"l2": 0.5}), ["l2: 0.001 in the file, 0.5 here"]),
    "keys": (_with(ARCHS["mlp"], layers=[dict(ARCHS["mlp"]["layers"][0], name="first")]
                   + ARCHS["mlp"]["layers"][1:]),
             ["keys missing from the file: first.W, first.b", "keys not in this module: l0.W, l0.b"]),
    "kind": (SEQ, ["keys missing from the file: l0.Wx", r"input.kind: \"features\" in the file"]),
}


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("wid", list(WRONG))
def test_another_architecture_is_refused(builder, tmp_path, wid, backend):
    mod = builder(ARCHS["mlp"], "numpy")
    mod.save_params(tmp_path / "p.npz", _perturbed(mod))
    arch, expected = WRONG[wid]
    other = builder(arch, backend)
    with pytest.raises(ValueError, match="holds the parameters of another architecture") as info:
        other.load_params(tmp_path / "p.npz")
    for pattern in expected:
        assert __import__("re").search(pattern, str(info.value)), (pattern, str(info.value))


def _zip_with_text(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("l0.W.npy", "not an array")


# a bad file -> (exception, the message)
BAD_FILES = {
    "missing": (None, FileNotFoundError, "path: no such file"),
    "directory": (lambda p: p.mkdir(), IsADirectoryError, "is a directory"),
    "text": (lambda p: p.write_text("hello\n"), ValueError, r"is not an \.npz file"),
    "empty": (lambda p: p.write_bytes(b""), ValueError, r"is not an \.npz file"),
    "zip of text": (_zip_with_text, ValueError, r"is not an \.npz file of arrays"),
    "plain npz": (lambda p: np.savez(open(p, "wb"), x=np.zeros(3)), ValueError,
                  "was not written by save_params"),
    "pickled": (lambda p: np.savez(open(p, "wb"), a=np.array([{}], dtype=object)), ValueError,
                "cannot read"),
}


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("fid", list(BAD_FILES))
def test_bad_files(builder, tmp_path, fid, backend):
    make, exc, message = BAD_FILES[fid]
    path = tmp_path / "p.npz"
    if make is not None:
        make(path)
    mod = builder(ARCHS["mlp"], backend)
    with pytest.raises(exc, match=message):
        mod.load_params(path)


@pytest.mark.parametrize("bad", [None, 3, b"p.npz", ["p.npz"]])
def test_path_must_be_a_file_name(builder, bad):
    mod = builder(ARCHS["mlp"], "numpy")
    with pytest.raises(ValueError, match="path: expected a file name"):
        mod.load_params(bad)
    with pytest.raises(ValueError, match="path: expected a file name"):
        mod.save_params(bad, mod.init_params())


def test_save_into_a_missing_directory(builder, tmp_path):
    mod = builder(ARCHS["mlp"], "numpy")
    with pytest.raises(FileNotFoundError):
        mod.save_params(tmp_path / "nodir" / "p.npz", mod.init_params())


def test_cli_takes_params_files(tmp_path, monkeypatch):
    """``bpgen check --params`` and ``bpgen spectrum --params``: a file of the
    architecture is used, one of another is one line and exit status 2."""
    import yaml
    monkeypatch.chdir(tmp_path)
    arch = _with(ARCHS["mlp"], name="pf_cli")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_hidden(units=6)))
    mod = bpgen.build(arch, backend="numpy", out_dir=tmp_path / "gen")
    params = _perturbed(mod)
    mod.save_params("p.npz", params)
    rng = np.random.default_rng(0)
    np.savez("data.npz", x=rng.standard_normal((6, 4)), y=rng.standard_normal((6, 3)))
    assert main(["check", "arch.yaml", "--backend", "numpy", "--quiet", "--params", "p.npz"]) == 0
    assert main(["spectrum", "arch.yaml", "--backend", "numpy", "--quiet", "--data", "data.npz",
                 "--params", "p.npz", "--full"]) == 0
    for argv in (["check", "other.yaml", "--backend", "numpy", "--quiet", "--params", "p.npz"],
                 ["spectrum", "other.yaml", "--backend", "numpy", "--quiet", "--data",
                  "data.npz", "--params", "p.npz"],
                 ["spectrum", "arch.yaml", "--backend", "numpy", "--quiet", "--data",
                  "data.npz", "--params", "missing.npz"]):
        assert main(argv) == 2


def test_cli_spectrum_uses_the_file(tmp_path, monkeypatch, capsys):
    """The spectrum printed with --params is that of the saved parameters."""
    import yaml
    monkeypatch.chdir(tmp_path)
    arch = _with(ARCHS["mlp"], name="pf_cli2")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    mod = bpgen.build(arch, backend="numpy", out_dir=tmp_path / "gen")
    params = _perturbed(mod, seed=5)
    mod.save_params("p.npz", params)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    np.savez("data.npz", x=x, y=y)
    capsys.readouterr()
    assert main(["spectrum", "arch.yaml", "--backend", "numpy", "--quiet", "--data", "data.npz",
                 "--params", "p.npz", "--full", "-k", "2"]) == 0
    out = capsys.readouterr().out
    largest = np.linalg.eigvalsh(mod.hessian(params, x, y))[::-1][:2]
    printed = [float(v) for v in out.split("largest 2:")[1].split("\n")[0].split()]
    assert np.allclose(printed, largest, rtol=1e-5)
    assert "parameters from p.npz" in out
