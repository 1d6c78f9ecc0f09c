"""The generated modules' static Python code, unit-tested as the ordinary
files it is kept in (bpgen/backends/*/runtime/*.py): the common API's
argument handling, initialisation by role and memory refusal, and the
structured Hessian's loss curvature."""
import collections

import numpy as np
import pytest

import bpgen.patterns
from bpgen.backends.common.emitter import RUNTIME_MARKER
from bpgen.backends.common.runtime import api, hessian


@pytest.fixture
def rt(monkeypatch):
    """api.py with the constants of a small network set on it."""
    shapes = collections.OrderedDict([("l0.W", (3, 2)), ("l0.b", (2,)), ("n.g", (2,))])
    for name, value in {"PARAM_SHAPES": shapes, "N_PARAMS": 10, "INPUT_SHAPE": (3,),
                        "OUTPUT_UNITS": 2, "LOSS": "softmax_cross_entropy",
                        "TARGET_KIND": "labels",
                        "_INIT": {"l0.W": ("glorot", 3, 2), "l0.b": ("zeros", 2, 2),
                                  "n.g": ("ones", 2, 2)}}.items():
        monkeypatch.setattr(api, name, value)
    monkeypatch.setattr(api, "_SLICES", api._slices())
    monkeypatch.setattr(api, "_EYE", [])
    return api


def test_runtime_files_have_the_marker():
    for mod in (api, hessian, bpgen.patterns):
        with open(mod.__file__, encoding="utf-8") as fh:
            assert RUNTIME_MARKER in fh.read()


def test_init_params_by_role(rt):
    p = rt.init_params(seed=3)
    assert np.all(p["l0.b"] == 0) and np.all(p["n.g"] == 1)
    assert np.all(np.abs(p["l0.W"]) <= np.sqrt(6 / 5)) and np.any(p["l0.W"] != 0)
    assert np.array_equal(rt.init_params(seed=3)["l0.W"], p["l0.W"])
    for bad in ("a", -1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            rt.init_params(bad)


def test_flatten_roundtrip_and_errors(rt):
    vec = np.arange(10.0)
    p = rt.unflatten(vec)
    assert list(p) == list(rt.PARAM_SHAPES) and p["l0.W"].shape == (3, 2)
    assert np.array_equal(rt.flatten(p), vec)
    with pytest.raises(ValueError, match=r"vector: expected shape \(10,\)"):
        rt.unflatten(np.zeros(9))
    with pytest.raises(ValueError, match=r"params: missing key 'n.g'"):
        rt.flatten({"l0.W": p["l0.W"], "l0.b": p["l0.b"]})
    with pytest.raises(ValueError, match=r"params\['l0.b'\]: expected shape \(2,\)"):
        rt.flatten(dict(p, **{"l0.b": np.zeros(3)}))


def test_x_and_label_checks(rt):
    xm, n = rt._check_x(np.ones((4, 3), dtype=np.float32))
    assert n == 4 and xm.dtype == np.float64
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3\)"):
        rt._check_x(np.ones((4, 2)))
    onehot = rt._check_y(np.array([1, 0, 1, 1]), 4, xm)
    assert np.array_equal(onehot, np.eye(2)[[1, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 2\)"):
        rt._check_y(np.array([0, 2, 1, 1]), 4, xm)


def test_a_result_too_large_is_refused_before_allocating(rt, monkeypatch):
    monkeypatch.setattr(rt, "N_PARAMS", 10**6)
    with pytest.raises(ValueError, match=r"hessian: the result needs 8,000,000,000,000 bytes "
                                         r"\(N_PARAMS = 1,000,000\)"):
        rt.hessian({}, None, None)


@pytest.mark.parametrize("form", ["softmax", "diagonal"])
def test_loss_factor_squares_to_the_loss_curvature(monkeypatch, form):
    monkeypatch.setattr(hessian, "_CURV_FORM", form)
    monkeypatch.setattr(hessian, "_CURV_LOSS", 0)
    c = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])   # softmax p, or l'' per unit
    s = hessian._loss_factor([c], 2)
    for i in range(2):
        want = np.diag(c[i]) - np.outer(c[i], c[i]) if form == "softmax" else np.diag(c[i])
        assert np.allclose(s[i] @ s[i].T, want / 2, rtol=0, atol=1e-15)


def test_memory_limit_from_the_environment(rt, monkeypatch):
    monkeypatch.setenv("BPGEN_MAX_BYTES", "1e6")
    assert rt._memory_limit() == 10**6
    monkeypatch.setenv("BPGEN_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="BPGEN_MAX_BYTES"):
        rt._memory_limit()
    monkeypatch.delenv("BPGEN_MAX_BYTES")
    assert rt._memory_limit() >= 2**20
