"""The C functions as users get them: compiled once per vector width
(AVX-512, AVX2, baseline x86-64; GCC's ``target_clones``), the copy chosen
when the module loads.  The rest of the suite builds one baseline copy
(conftest sets ``BPGEN_CLONES=0`` for speed), so this file builds a sample of
every family with the clones (dense, rnn, lstm, gru, birnn, conv; both
dtypes; every loss) and checks each C entry point against the NumPy
backend: ``forward``, ``loss_and_grad``, ``hvp``, ``ggn_vp``, ``hessian``,
``hessian_diag``.  The loops of the wider copies differ from the baseline's
only in their vector width (sums in another order, libmvec's few-ulp math),
so the tolerances are the backends' usual ones."""
import glob
import os
import platform

import numpy as np
import pytest

import bpgen
from bpgen.backends.c import build
from bpgen.check import rel_err, sample_point
from bpgen.spec import load_spec

from conftest import mlp, users_build_config

SCE, BCE = "softmax_cross_entropy", "sigmoid_binary_cross_entropy"


def _seq(name, kind, loss, steps, dtype="float64", **layer):
    return {"name": name, "dtype": dtype, "input": {"features": 3, "steps": 5},
            "layers": [dict({"type": kind, "units": 4}, **layer), {"type": "dense", "units": 2}],
            "loss": {"type": loss, "steps": steps}}


ARCHS = {
    "dense_sce_l2": mlp("tanh", SCE, hidden=(7, 5), out=3, l2=0.01, name="cl_dense"),
    "dense_relu_f32": mlp("relu", "mse", dtype="float32", hidden=(9,), name="cl_dense32"),
    "rnn_bce_last": _seq("cl_rnn", "rnn", BCE, "last"),
    "lstm_f32_all": _seq("cl_lstm32", "lstm", "mse", "all", dtype="float32"),
    "gru_all": _seq("cl_gru", "gru", "mse", "all"),
    "birnn_lstm_last": _seq("cl_bi", "birnn", "mse", "last", cell="lstm"),
    "conv_pool": {"name": "cl_conv", "dtype": "float64",
                  "input": {"channels": 2, "height": 6, "width": 6},
                  "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1,
                              "activation": "tanh"},
                             {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
                             {"type": "dense", "units": 3}],
                  "loss": SCE},
}
_built = {}


@pytest.fixture
def cloned(tmp_path_factory, monkeypatch):
    """build(name) -> the C module of ARCHS[name] with the clones (built once)."""
    config = users_build_config()

    def make(name):
        if name not in _built:
            monkeypatch.setattr(build, "BUILD", config)
            _built[name] = bpgen.build(ARCHS[name], backend="c",
                                       out_dir=tmp_path_factory.mktemp(f"clones_{name}"))
            monkeypatch.undo()
        return _built[name]
    return make


def _close(a, b, dtype, what):
    tol = 1e-10 if dtype == "float64" else 2e-4
    assert rel_err(np.asarray(a), np.asarray(b)) <= tol, what


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_clones_match_numpy(builder, cloned, name):
    arch = ARCHS[name]
    spec, c_mod, np_mod = load_spec(arch), cloned(name), builder(arch, "numpy")
    params, x, y = sample_point(spec, np_mod, batch=4, seed=3)
    v = np_mod.unflatten(np.random.default_rng(7).standard_normal(np_mod.N_PARAMS)
                         .astype(arch["dtype"]))
    dtype = arch["dtype"]
    _close(c_mod.forward(params, x), np_mod.forward(params, x), dtype, "forward")
    (cl, cg), (nl, ng) = c_mod.loss_and_grad(params, x, y), np_mod.loss_and_grad(params, x, y)
    _close(cl, nl, dtype, "loss")
    _close(c_mod.flatten(cg), np_mod.flatten(ng), dtype, "grad")
    for fn in ("hvp", "ggn_vp"):
        _close(c_mod.flatten(getattr(c_mod, fn)(params, x, y, v)),
               np_mod.flatten(getattr(np_mod, fn)(params, x, y, v)), dtype, fn)
    hc = c_mod.hessian(params, x, y)
    _close(hc, np_mod.hessian(params, x, y), dtype, "hessian")
    assert np.array_equal(hc, hc.T)
    _close(c_mod.flatten(c_mod.hessian_diag(params, x, y)),
           np_mod.flatten(np_mod.hessian_diag(params, x, y)), dtype, "hessian_diag")


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux",
                    reason="target_clones: GCC on x86-64 glibc only")
def test_extension_holds_every_copy(cloned):
    """The extension has the AVX-512, AVX2 and baseline copy of each function."""
    mod = cloned("dense_sce_l2")
    [path] = glob.glob(os.path.join(os.path.dirname(mod.__file__), mod.EXTENSION + ".*"))
    with open(path, "rb") as fh:
        blob = fh.read()
    for fn in ("bpg_forward", "bpg_loss_and_grad", "bpg_hvp", "bpg_hessian"):
        for isa in ("avx512f", "avx2", "default"):
            assert f"{fn}.{isa}".encode() in blob, (fn, isa)
