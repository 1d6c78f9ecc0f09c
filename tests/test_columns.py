"""bpgen/columns.py: hessian_columns split once, as data (derived.columns),
and both backends printing it."""
import os
import re

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


def test_zero_when():
    """Primitive.zero_when: is the result zero when those arguments are?
    Products when either factor is, a map when SymPy says its expression
    is (a tangent's: a sum of terms each holding one tangent factor)."""
    import sympy as sp
    from bpgen.ir import Op
    from bpgen.primitives import PRIMITIVES
    a, b, c = sp.symbols("a b c")
    mp = PRIMITIVES["map"]
    op = Op("map", "o", ("a", "b", "c"), {"expr": a * b + c / (1 + b)})
    assert mp.zero_when(op, {"a", "c"})
    assert not mp.zero_when(op, {"a"})
    assert not mp.zero_when(Op("map", "o", ("a",), {"expr": a + 1}), {"a"})
    mm = PRIMITIVES["matmul"]
    assert mm.zero_when(Op("matmul", "o", ("a", "b"), {"ta": False, "tb": True}), {"b"})
    # added into its result: not zero
    assert not mm.zero_when(Op("matmul", "o", ("a", "b"), {"ta": False, "tb": False,
                                                            "acc": True}), {"a"})
    cm = PRIMITIVES["causal_mask"]
    assert cm.zero_when(Op("causal_mask", "o", ("a", "m"), {"fill": "0"}), {"a"})
    assert not cm.zero_when(Op("causal_mask", "o", ("a", "m"), {"fill": "-inf"}), {"a"})
    assert not PRIMITIVES["concat"].zero_when(Op("concat", "o", ("a", "b"), {}), {"a"})


def test_zero_tangents_skipped(derived):
    """The C tangent part skips an op whose tangent arguments are all zero
    in the chunk (blocks of v no direction falls in, tangents of skipped
    ops), zeroing its result: for the transformer every forward tangent
    before a later layer's direction."""
    name, d = derived
    cols = d.columns
    data, _ = c_columns._batched(cols, d.spec.dtype, set(), {})
    lines = [line for block in data["blocks"] for line in block["lines"]]
    text = "\n".join(lines)
    assert "/* a zero block of v */" in text
    # every zeroing memset's size is a non-negative count (GCC's
    # -Wstringop-overflow warned of a negative N making it huge)
    zeroing = [line for line in lines if line.strip().startswith("memset(") and "zero" in line]
    assert zeroing and all(re.search(r"\(size_t\)\((.+) > 0 \? \1 : 0\)", line)
                           for line in zeroing), zeroing
    if name == "tiny_transformer":
        assert "/* zero tangents */" in text
        # the embedding's tangent: zero unless a direction is in E or P
        assert any(re.fullmatch(r"const int tnz_r_\w+ = vnz_v_\w+_E \|\| vnz_v_\w+_P;", line)
                   for line in lines)


def test_batched_maps_hoist_row_reciprocals():
    """Over k directions a map computes what is the same for a whole row
    once per row, a reciprocal too (softmax's 1/Zs, layernorm's
    1/(2 ss + ε)): the loop over the directions multiplies, it divides by
    no per-row value."""
    d = derive_all(load_spec(EXAMPLES["tiny_transformer"]))
    data, _ = c_columns._batched(d.columns, d.spec.dtype, set(), {})
    lines = [line.strip() for block in data["blocks"] for line in block["lines"]]
    hoisted = [line for line in lines if re.fullmatch(
        r"const real h_r_\w+ = \(1\.0/\(.*v_\w+\[rr\*1 \+ 0\].*\)\);", line)]
    assert len(hoisted) >= 4
    assert not any(re.search(r"/v_\w+\[rr\*1 \+ 0\]", line) for line in lines
                   if not line.startswith(("const real h_", "/*")))
