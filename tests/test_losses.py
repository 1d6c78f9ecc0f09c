"""The losses (bpgen/losses/), one row each in ROWS: the loss's declared
facts (target kind and range, curvature form, rank), its reference against
the textbook formula and finite differences, its curvature form against the
Hessian of its reference w.r.t. the output, the generated modules (both
backends) against the reference, and bad targets refused with a ValueError
naming y in both backends, the C entry points included.

Adding a loss is one file in bpgen/losses/ plus a row here; HUBER below, a
loss that exists only in this file, shows it: registered for one test, it
builds, checks its targets and matches its reference and finite
differences, with nothing else in bpgen touched.  And nothing in bpgen
outside bpgen/losses/ names a loss (test_no_loss_named_outside_its_file).
"""
import os
import re

import numpy as np
import pytest
import sympy as sp

import bpgen
from bpgen import reference as ref
from bpgen.check import sample_point
from bpgen.doc import document, markdown
from bpgen.losses import CURVATURE_FORMS, LOSSES, Loss
from bpgen.losses.base import batch_count
from bpgen.hessian_text import hessian_items
from bpgen.spec import load_spec

from conftest import ROOT


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(o):
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _nan_at_first(y):
    y = np.array(y, dtype=float)
    y.flat[0] = np.nan
    return y


#: one row per loss: the facts it must declare, the textbook per-row value
#: (rows, K), y -> (rows,), its curvature c (rows, K) as the form reads it,
#: and bad targets (y, K) -> y, each refused with "y: ..."
ROWS = {
    "mse": {
        "kind": "real", "range": None, "form": "diagonal", "rank_deficit": 0,
        "per_row": lambda o, y: 0.5 * ((o - y) ** 2).sum(axis=-1),
        "curv": lambda o, y: np.ones_like(o),
        "bad": [("NaN", lambda y, k: _nan_at_first(y)),
                ("inf", lambda y, k: np.full_like(y, np.inf)),
                ("labels instead of values", lambda y, k: np.zeros(y.shape[0], np.int64))],
    },
    "softmax_cross_entropy": {
        "kind": "labels", "range": None, "form": "softmax", "rank_deficit": 1,
        "per_row": lambda o, y: -np.log(_softmax(o)[np.arange(len(y)), y]),
        "curv": lambda o, y: _softmax(o),
        "bad": [("label K", lambda y, k: np.where(y == y[0], k, y)),
                ("label -1", lambda y, k: np.where(y == y[0], -1, y)),
                ("float labels", lambda y, k: y.astype(np.float64) + 0.5),
                ("one-hot", lambda y, k: np.eye(k)[y])],
    },
    "sigmoid_binary_cross_entropy": {
        "kind": "real", "range": (0.0, 1.0), "form": "diagonal", "rank_deficit": 0,
        "per_row": lambda o, y: -(y * np.log(_sigmoid(o))
                                  + (1 - y) * np.log(1 - _sigmoid(o))).sum(axis=-1),
        "curv": lambda o, y: _sigmoid(o) * (1 - _sigmoid(o)),
        "bad": [("above 1", lambda y, k: y + 1), ("below 0", lambda y, k: y - 1),
                ("NaN", lambda y, k: _nan_at_first(y))],
    },
}

K = 3


def test_every_loss_has_a_row():
    assert set(ROWS) == set(LOSSES)


def _arch(loss, name, dtype="float64"):
    """The smallest network whose Hessian is the loss's: one identity dense layer."""
    return {"name": name, "dtype": dtype, "input": {"features": 2},
            "layers": [{"type": "dense", "units": K}], "loss": loss}


def _out_and_y(loss, n=5, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, K))
    return out, loss.sample_targets(rng, out.shape, "float64")


# ---- the loss's facts and reference ----------------------------------------

@pytest.mark.parametrize("name", list(ROWS))
def test_declared_facts(name):
    loss, row = LOSSES[name], ROWS[name]
    assert loss.name == name
    assert (loss.target_kind, loss.target_range) == (row["kind"], row["range"])
    assert loss.curvature_form == row["form"] and loss.curvature_form in CURVATURE_FORMS
    assert loss.rank_deficit == row["rank_deficit"]
    assert loss.doc and "{n}" in loss.curvature_text and "{n}" in loss.curvature_tex


@pytest.mark.parametrize("name", list(ROWS))
def test_sample_targets_fit_the_loss(name):
    loss, row = LOSSES[name], ROWS[name]
    y = loss.sample_targets(np.random.default_rng(1), (40, K), "float32")
    if row["kind"] == "labels":
        assert y.dtype == np.int64 and y.shape == (40,) and 0 <= y.min() and y.max() < K
    else:
        assert y.dtype == np.float32 and y.shape == (40, K)
    if row["range"]:
        assert row["range"][0] <= y.min() and y.max() <= row["range"][1]


@pytest.mark.parametrize("name", list(ROWS))
def test_reference_against_the_textbook_and_finite_differences(name):
    loss, row = LOSSES[name], ROWS[name]
    out, y = _out_and_y(loss)
    assert np.isclose(loss.reference_value(out, y), row["per_row"](out, y).mean(),
                      rtol=1e-12, atol=0)
    g = loss.reference_grad(out, y)
    fd = np.zeros_like(out)
    for i in np.ndindex(out.shape):
        d = np.zeros_like(out)
        d[i] = 1e-6
        fd[i] = (loss.reference_value(out + d, y) - loss.reference_value(out - d, y)) / 2e-6
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-9)


def _form_matrix(form, c):
    """The per-row Hessian (K, K) the form makes of c."""
    return np.diag(c) - (np.outer(c, c) if form == "softmax" else 0)


@pytest.mark.parametrize("name", list(ROWS))
def test_curvature_form_is_the_hessian_of_the_reference(name):
    """diag(c) or diag(p) - p pᵀ, with the row's c, is the Hessian of one row's
    loss w.r.t. its output (finite differences of the reference gradient),
    and its rank is at most K - rank_deficit."""
    loss, row = LOSSES[name], ROWS[name]
    out, y = _out_and_y(loss, n=3, seed=2)
    c = row["curv"](out, y)
    n = batch_count(out)
    for r in range(out.shape[0]):
        fd = np.zeros((K, K))
        for j in range(K):
            d = np.zeros_like(out)
            d[r, j] = 1e-5
            fd[:, j] = n * (loss.reference_grad(out + d, y) - loss.reference_grad(out - d, y))[r] / 2e-5
        want = _form_matrix(loss.curvature_form, c[r])
        assert np.allclose(fd, want, rtol=1e-6, atol=1e-8)
        assert np.linalg.matrix_rank(want, tol=1e-10) <= K - loss.rank_deficit


# ---- the generated modules ---------------------------------------------------

@pytest.mark.parametrize("name", list(ROWS))
def test_numpy_module_against_the_reference(builder, name):
    """Value, gradient, the structured Hessian (Λ_out from the loss's
    curvature and form) and its exact diagonal."""
    arch = _arch(name, f"loss_{name[:4]}")
    spec = load_spec(arch)
    mod = builder(arch, "numpy")
    loss = LOSSES[name]
    assert (mod.TARGET_KIND, mod.TARGET_RANGE, mod._CURV_FORM) == (
        loss.target_kind, loss.target_range, loss.curvature_form)
    params, x, y = sample_point(spec, mod, batch=6, seed=4)
    value, grads = mod.loss_and_grad(params, x, y)
    want_value, want_grads = ref.loss_and_grad(spec, params, x, y)
    assert np.isclose(value, want_value, rtol=1e-12, atol=0)
    for key in grads:
        assert np.allclose(grads[key], want_grads[key], rtol=1e-10, atol=1e-13)
    h = mod.hessian(params, x, y)
    fd = ref.finite_difference_hessian(spec, params, x, y)
    assert np.allclose(h, fd, rtol=1e-6, atol=1e-8)
    diag = mod.flatten(mod.hessian_diag(params, x, y))
    assert np.allclose(diag, np.diag(h), rtol=1e-12, atol=1e-14)


def _targets(name, y, what):
    return dict(ROWS[name]["bad"])[what](np.asarray(y), K)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("name,what", [(n, w) for n, row in ROWS.items() for w, _ in row["bad"]])
def test_bad_targets_are_refused_naming_y(builder, backend, name, what):
    arch = _arch(name, f"loss_{name[:4]}")
    mod = builder(arch, backend)
    params, x, y = sample_point(load_spec(arch), mod, batch=4, seed=5)
    bad = _targets(name, y, what)
    fast = backend == "c" and bool(mod._FASTCALL)
    for entry in ("loss", "loss_and_grad"):
        before = mod._fastcall_counts()[entry] if fast else None
        with pytest.raises(ValueError, match=r"^y: "):
            getattr(mod, entry)(params, x, bad)
        if fast:        # the C entry point saw it, and left it to the Python path
            assert mod._fastcall_counts()[entry] == (before[0], before[1] + 1), entry
    if fast:            # and good targets stay in C
        before = mod._fastcall_counts()["loss"]
        mod.loss(params, x, y)
        assert mod._fastcall_counts()["loss"] == (before[0] + 1, before[1])


@pytest.mark.parametrize("name", [n for n, row in ROWS.items() if row["range"]])
def test_target_range_is_closed(builder, name):
    """The bounds themselves are targets (Python and C alike)."""
    lo, hi = ROWS[name]["range"]
    arch = _arch(name, f"loss_{name[:4]}")
    for backend in ("numpy", "c"):
        mod = builder(arch, backend)
        params, x, y = sample_point(load_spec(arch), mod, batch=4, seed=6)
        edge = np.where(np.arange(y.size).reshape(y.shape) % 2, lo, hi).astype(mod.DTYPE)
        assert np.isclose(mod.loss(params, x, edge), ref.loss(load_spec(arch), params, x, edge),
                          rtol=1e-12, atol=0)


# ---- nothing outside bpgen/losses/ names a loss -----------------------------

def test_no_loss_named_outside_its_file():
    """Every file of the package (Python, C, templates) outside bpgen/losses/
    is free of every registered loss name (as a word: ``memset`` does not
    name ``mse``)."""
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, LOSSES))
                         + r")(?![A-Za-z0-9])")
    package = os.path.join(ROOT, "bpgen")
    found = []
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if os.path.relpath(folder, package).split(os.sep)[0] == "losses":
            continue
        for fname in files:
            path = os.path.join(folder, fname)
            with open(path, encoding="utf-8", errors="replace") as fh:
                for i, line in enumerate(fh, 1):
                    if pattern.search(line):
                        found.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


# ---- the recipe: a new loss is one file plus a row -------------------------

class Huber(Loss):
    """What ``bpgen/losses/huber.py`` would hold (δ = 1): registered only for
    the test below, so that it never reaches the rest of the suite."""
    name = "huber_test_only"
    target_kind = "real"
    curvature_form = "diagonal"
    doc = "Huber loss (δ = 1) per unit"
    curvature_text = "diag(1[|o - y| <= 1]) / {n}"
    curvature_tex = r"\frac{\operatorname{diag}(1_{|o - y| \le 1})}{{n}}"

    def forward(self, g, o, y):
        d = g.sym(o) - g.sym(y)
        terms = g.map(sp.Piecewise((d - sp.Rational(1, 2), d > 1),
                                   (-d - sp.Rational(1, 2), d < -1), (d ** 2 / 2, True)),
                      base="loss_terms", label="ℓ", comment="Huber per unit")
        return {"terms": terms, "output": o}

    def reference_value(self, out, y):
        a = np.abs(out - y)
        return float(np.sum(np.where(a <= 1, 0.5 * a * a, a - 0.5))) / batch_count(out)

    def reference_grad(self, out, y):
        return np.clip(out - y, -1, 1) / batch_count(out)

    def sample_targets(self, rng, shape, dtype):
        return (3 * rng.standard_normal(shape)).astype(dtype)


def test_a_new_loss_is_one_file(monkeypatch, tmp_path):
    monkeypatch.setitem(LOSSES, Huber.name, Huber())
    arch = _arch(Huber.name, "huber_net")
    spec = load_spec(arch)
    mod = bpgen.build(arch, backend="numpy", out_dir=tmp_path)
    params, x, y = sample_point(spec, mod, batch=8, seed=7)
    value, grads = mod.loss_and_grad(params, x, y)
    want_value, want_grads = ref.loss_and_grad(spec, params, x, y)
    assert np.isclose(value, want_value, rtol=1e-12, atol=0)
    for key in grads:
        assert np.allclose(grads[key], want_grads[key], rtol=1e-10, atol=1e-13)
    assert np.allclose(mod.hessian(params, x, y), ref.finite_difference_hessian(spec, params, x, y),
                       rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"^y: contains NaN"):
        mod.loss(params, x, _nan_at_first(y))
    # bpgen doc and bpgen show --hessian print its text
    assert "Huber loss (δ = 1) per unit" in markdown(document(arch))
    assert any("diag(1[|o - y| <= 1]) / N" in item.text() for item in hessian_items(arch))
