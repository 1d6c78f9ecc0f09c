"""Every assembly op of the structured Hessian (bpgen/assembly) on its own,
before any network uses it: the NumPy code it prints and the C code it
prints (through the C runtime helpers, every product inline or through the
BLAS) against a direct loop/einsum reference of its equation, on odd sizes,
with a sentinel around every block written into a larger matrix (nothing
outside it may change).  One row of CASES per op (and per variant): adding
an op is one file plus a row here."""
import importlib.util
import math
import shutil

import numpy as np
import pytest

from bpgen.assembly import ASSEMBLY_OPS, Assembly, Tensor
from bpgen.assembly import ops as o
from bpgen.backends.c.build import BUILD
from bpgen.backends.c.emitter import HELPERS, _HERE, cname
from bpgen.backends.common.emitter import runtime_source

N = 3
SENTINEL = 7.25


def _sym(rng, *shape):
    a = rng.standard_normal(shape)
    return (a + np.swapaxes(a, -1, -2)) / 2


FIXED = ("W1", "H", "Gt")      # a parameter, a result, fixed-size scratch: not per sample


def _tensors(arrays, outputs=()):
    return {name: Tensor(name, (("N",) + a.shape[1:]) if name not in outputs and a.ndim > 1
                         and name not in FIXED else a.shape, name, name,
                         "output" if name in outputs else "input")
            for name, a in arrays.items()}


# ---- one builder per row: (ops, input arrays, output names, reference outputs)

def _loss(softmax):
    def build(rng):
        p = rng.random((N, 4)) + 0.1
        p /= p.sum(axis=1, keepdims=True)
        ref = np.stack([(np.diag(r) - (np.outer(r, r) if softmax else 0)) / N for r in p])
        form = "softmax" if softmax else "diagonal"
        return [o.LossCurvature("L", "p", form)], {"p": p, "L": np.zeros((N, 4, 4))}, \
            ["L"], {"L": ref}
    return build


def _sandwich(with_w):
    def build(rng):
        u, v = (5, 4) if with_w else (4, 4)
        nxt, w = _sym(rng, N, v, v), rng.standard_normal((u, v))
        d1, d2, q = (rng.standard_normal((N, u)) for _ in range(3))
        mid = np.einsum("ia,nab,jb->nij", w, nxt, w) if with_w else nxt
        ref = d1[:, :, None] * mid * d1[:, None, :]
        ref[:, np.arange(u), np.arange(u)] += d2 * q
        arrays = {"nxt": nxt, "d1": d1, "d2": d2, "q": q, "T": np.zeros((N, 2 * u, v)),
                  "L": np.zeros((N, u, u))}
        if with_w:
            arrays["W1"] = w
        return [o.Sandwich("L", "nxt", "W1" if with_w else None, "d1", "d2", "q", "T")], \
            arrays, ["L"], {"L": ref}
    return build


def _append_ones(rng):
    a = rng.standard_normal((N, 3))
    return [o.AppendOnes("a1", "a")], {"a": a, "a1": np.zeros((N, 4))}, ["a1"], \
        {"a1": np.concatenate([a, np.ones((N, 1))], axis=1)}


def _chain_start(rng):
    d = rng.standard_normal((N, 4))
    return [o.ChainStart("J", "d")], {"d": d, "J": np.full((N, 4, 4), SENTINEL)}, ["J"], \
        {"J": np.stack([np.diag(r) for r in d])}


def _scale_columns(rng):
    z, d = rng.standard_normal((N, 3, 5)), rng.standard_normal((N, 5))
    return [o.ScaleColumns("J", "Z", "d")], {"Z": z, "d": d, "J": np.zeros((N, 3, 5))}, ["J"], \
        {"J": z * d[:, None, :]}


def _shared_product(rng):
    j, w = rng.standard_normal((N, 3, 5)), rng.standard_normal((5, 2))
    return [o.SharedProduct("Z", "J", "W1")], {"J": j, "W1": w, "Z": np.zeros((N, 3, 2))}, \
        ["Z"], {"Z": j @ w}


def _sample_product(rng):
    a, b = rng.standard_normal((N, 3, 4)), rng.standard_normal((N, 4, 2))
    return [o.SampleProduct("M", "A", "B")], {"A": a, "B": b, "M": np.zeros((N, 3, 2))}, \
        ["M"], {"M": a @ b}


def _kron(diagonal):
    """A block at (r0, c0) of a larger H with a sentinel around it: the
    diagonal variant (exactly symmetric; in C tiles of pc pairs at a time,
    here 3 of its 10 pairs per chunk, so that chunks end mid-row), the
    other with J and its Mirror."""
    def build(rng):
        pk1, ck = 4, 3
        pl1, cl = (pk1, ck) if diagonal else (5, 2)
        rows, cols = pk1 * ck, pl1 * cl
        r0 = 2
        c0 = r0 if diagonal else r0 + rows + 1
        size = c0 + cols + 3
        ak, al = rng.standard_normal((N, pk1)), rng.standard_normal((N, pl1))
        if diagonal:
            al = ak
        m = _sym(rng, N, ck, cl) if diagonal else rng.standard_normal((N, ck, cl))
        j = None if diagonal else rng.standard_normal((N, ck, pl1 - 1))
        delta = None if diagonal else rng.standard_normal((N, cl))
        blk = np.einsum("np,ni,nqj->pqij", ak, al, m)
        if not diagonal:
            blk[:, :, :-1, :] += np.einsum("np,nqi,nj->pqij", ak, j, delta)
        blk = blk.reshape(rows, cols)
        ref = np.full((size, size), SENTINEL)
        ref[r0:r0 + rows, c0:c0 + cols] = blk
        ref[c0:c0 + cols, r0:r0 + rows] = blk.T
        arrays = {"ak": ak, "al": al, "M": m, "R": np.zeros((N, cols)),
                  "H": np.full((size, size), SENTINEL)}
        if diagonal:
            pc = 3
            arrays.update(Wt=np.zeros((N, pc)), Gt=np.zeros(pc * ck * ck))
            ops = [o.KronBlock("H", size, r0, r0, "ak", "ak", "M", None, None, "R", "b", "b",
                               "Wt", "Gt", pc)]
            del arrays["al"]
        else:
            arrays.update(J=j, delta=delta)
            ops = [o.KronBlock("H", size, r0, c0, "ak", "al", "M", "J", "delta", "R", "b", "c"),
                   o.Mirror("H", r0, c0, rows, cols, "b", "c")]
        return ops, arrays, ["H"], {"H": ref}
    return build


def _add_l2(rng):
    h = rng.standard_normal((6, 6))
    ref = h.copy()
    ref[np.arange(1, 4), np.arange(1, 4)] += 0.125
    return [o.AddL2("H", 1, 4, 0.125, "l0.W")], {"H": h}, ["H"], {"H": ref}


CASES = {
    "loss_curvature-softmax": _loss(True),
    "loss_curvature-diagonal": _loss(False),
    "sandwich": _sandwich(True),
    "sandwich-output": _sandwich(False),
    "append_ones": _append_ones,
    "chain_start": _chain_start,
    "scale_columns": _scale_columns,
    "shared_product": _shared_product,
    "sample_product": _sample_product,
    "kron_block-diagonal": _kron(True),
    "kron_block+mirror": _kron(False),
    "add_l2": _add_l2,
}


def _case(name):
    ops, arrays, outputs, ref = CASES[name](np.random.default_rng(len(name)))
    asm = Assembly("test", [], [], _tensors(arrays, outputs), ops, [])
    for op in ops:
        op.check(asm)
    return asm, arrays, outputs, ref


def test_every_op_has_a_case():
    covered = {op.name for name in CASES for op in _case(name)[0].ops}
    assert covered == set(ASSEMBLY_OPS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_equation_text_and_latex(name):
    asm = _case(name)[0]
    for op in asm.ops:
        eq = op.equation(asm)
        text, tex = eq.text(), eq.tex()
        assert text and tex and "{" not in text, text
        assert tex.count("{") == tex.count("}"), tex


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy(name):
    asm, arrays, outputs, ref = _case(name)
    ns = {"numpy": np, "DTYPE": np.dtype("float64"), "N": N}
    ns.update({k: v.copy() for k, v in arrays.items()})
    for op in asm.ops:
        exec("\n".join(op.numpy(asm)), ns)
    for out in outputs:
        np.testing.assert_allclose(ns[out], ref[out], rtol=1e-13, atol=1e-13, err_msg=out)
    if name.startswith("kron_block"):
        assert np.array_equal(ns["H"], ns["H"].T)


class _Em:
    """What an op's C printing needs from the emitter."""
    def __init__(self):
        self.used = set()

    def use(self, helper):
        assert helper in HELPERS, helper
        self.used.add(helper)

    name = staticmethod(cname)      # a variable's C name (under the prefix)


def _c_function(name):
    asm, arrays, _, _ = _case(name)
    em = _Em()
    body = [line for op in asm.ops for line in op.c(asm, em)]
    decls = [f"real *const {cname(k)} = (real *)t[{i}];" for i, k in enumerate(arrays)]
    fname = "case_" + name.replace("-", "_").replace("+", "_")
    return fname, em.used, (f"void {fname}(int64_t N, void **t)\n{{\n"
                            + "".join(f"    {d}\n" for d in decls)
                            + "".join(f"    {line}\n" for line in body) + "}\n")


@pytest.fixture(scope="module", params=["inline", "blas"])
def clib(request, tmp_path_factory):
    """Every case's C code in one cffi extension (float64): every product
    inline and every transposed copy by non-temporal stores (size threshold
    0), or every product through the BLAS (thresholds 0) and plain stores."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    cffi = pytest.importorskip("cffi")
    blas = request.param == "blas"
    if blas and not BUILD.blas:
        pytest.skip("no BLAS configured (scipy-openblas32 is not installed)")
    funcs, used = [], set()
    for name in CASES:
        fname, u, text = _c_function(name)
        funcs.append((fname, text))
        used |= u
    source = "\n".join([runtime_source(f"{_HERE}/runtime/prelude.c")]
                       + [runtime_source(f"{_HERE}/runtime/{h}.c") for h in sorted(used)]
                       + [text for _, text in funcs])
    defines = ("#define BPG_BLAS\n#define BPG_BLAS_MIN_NN 0\n#define BPG_BLAS_MIN_TN 0\n"
               "#define BPG_BLAS_MIN_NT 0\n") if blas else "#define BPG_NT_MIN_BYTES 0\n"
    builder = cffi.FFI()
    builder.cdef("\n".join(f"void {f}(int64_t N, void **t);" for f, _ in funcs))
    ext = f"_bpg_assembly_test_{request.param}"
    builder.set_source(ext, defines + source, extra_compile_args=["-std=gnu99", "-O1",
                                                                  "-fopenmp-simd"],
                       include_dirs=list(BUILD.include_dirs) if blas else [],
                       library_dirs=list(BUILD.library_dirs) if blas else [],
                       libraries=list(BUILD.libraries) if blas else [],
                       extra_link_args=BUILD.link_args if blas else [])
    path = builder.compile(tmpdir=str(tmp_path_factory.mktemp("assembly")), verbose=False)
    spec = importlib.util.spec_from_file_location(ext, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib


@pytest.mark.parametrize("name", sorted(CASES))
def test_c(clib, name):
    ffi, lib = clib
    asm, arrays, outputs, ref = _case(name)
    fname = _c_function(name)[0]
    bufs = {k: np.ascontiguousarray(v, dtype=np.float64).copy() for k, v in arrays.items()}
    for k in outputs:                     # outputs must be overwritten, not accumulated
        if k != "H":
            bufs[k][...] = np.nan
    ptrs = ffi.new("void *[]", [ffi.cast("void *", b.ctypes.data) for b in bufs.values()])
    getattr(lib, fname)(N, ptrs)
    for out in outputs:
        np.testing.assert_allclose(bufs[out], ref[out], rtol=1e-13, atol=1e-13, err_msg=out)
    if name.startswith("kron_block"):
        assert np.array_equal(bufs["H"], bufs["H"].T)
    assert math.isfinite(sum(float(b.sum()) for b in bufs.values()))
