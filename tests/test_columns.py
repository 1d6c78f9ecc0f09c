"""bpgen/columns.py: hessian_columns split once, as data (derived.columns),
and both backends printing it."""
import os

import pytest

from bpgen.backends.c import columns as c_columns
from bpgen.backends.numpy import columns as np_columns
from bpgen.derivation import derive_all
from bpgen.spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = {name: os.path.join(ROOT, "examples", name + ".yaml")
            for name in ("digits_mlp", "sine_lstm", "digits_cnn", "tiny_transformer")}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def derived(request):
    return request.param, derive_all(load_spec(EXAMPLES[request.param]))


def test_the_split(derived):
    name, d = derived
    cols = d.columns
    prog = d.programs["hessian_columns"]
    assert cols.program is prog
    assert cols.head.ops + cols.tangent.ops == prog.ops
    assert "columns_split" not in d.meta
    # the head never reads a direction; every tangent op has one value per direction
    assert not any(a in cols.batched for op in cols.head.ops for a in op.args)
    assert all(op.out in cols.batched for op in cols.tangent.ops)
    # the head returns exactly what the tangent part reads of it
    fixed = prog.inputs[:2 + len(d.base.masks) + len(d.base.params)]
    assert cols.head.inputs == fixed
    reads = {a for op in cols.tangent.ops for a in op.args}
    assert set(cols.head.outputs) == reads - cols.batched - set(prog.inputs)
    assert cols.tangent.inputs == fixed + cols.head.outputs + [b.name for b in cols.directions]
    assert cols.tangent.outputs == [b.name for b in cols.results]
    # direction and result blocks: the parameters' shapes, in the flat order
    at = 0
    for db, rb, p in zip(cols.directions, cols.results, d.base.params.values()):
        assert (db.rows, db.cols) == (rb.rows, rb.cols) == prog.vars[p].shape
        assert db.at == rb.at == at
        at += db.size
    assert cols.total == at
    assert len(cols.directions) == len(d.base.params)


def test_batched_rule_decided_once(derived):
    """The split's batched_rule says whether both backends can print the
    tangent part over k directions at once: every example's can (dense,
    recurrent, and conv and pool since gather, scatter and the arg-max
    have rules for k directions)."""
    name, d = derived
    cols = d.columns
    assert cols.batched_rule
    dtype = d.spec.dtype
    c_columns._batched(cols, dtype, set(), {})
    np_columns._BatchedEmitter(cols.tangent, dtype, cols.batched).blocks()
    assert set(cols.workspace) == cols.batched & (
        {a for op in cols.tangent.ops for a in (op.out, *op.args)} | set(
            b.name for b in cols.directions + cols.results))
    assert np_columns.columns_functions(d)[1]["name"] == "tangent_columns"
