"""bpgen export: the standalone C99 library of a network, compiled with
strict flags and run outside Python (tests/export/driver.c) against the
Python C module: forward, loss, gradient, hvp and ggn_vp; its workspace
sizes against the module's own; two networks in one program; a CBLAS;
sanitizers, valgrind and threads."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bpgen.c_export import export

import interop_archs
from conftest import mlp
from test_generated import sampled_arch

CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (gcc or cc) on PATH")

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "export", "driver.c")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
ALL = ["forward", "loss", "loss_and_grad", "hvp", "ggn_vp"]


def _seq(cell_layers, loss, dtype="float64", steps=6, features=3, **extra):
    arch = {"name": "seq", "dtype": dtype, "input": {"features": features, "steps": steps},
            "layers": cell_layers, "loss": loss}
    arch.update(extra)
    return arch


# "mlp", "cnn" and "transformer" are modules other suites build in C anyway
# (test_generated.py's sample, tests/interop_archs.py): one compile less each
ARCHS = {
    "mlp": sampled_arch("softmax_cross_entropy", "float64"),
    "mlp32": mlp(activation="relu", loss="mse", dtype="float32", hidden=(8,)),
    "layernorm": {"name": "ln", "input": {"features": 5},
                  "layers": [{"type": "dense", "units": 6, "activation": "gelu"},
                             {"type": "layernorm"}, {"type": "dense", "units": 2}],
                  "loss": "sigmoid_binary_cross_entropy"},
    "lstm_trunc": _seq([{"type": "lstm", "units": 4}, {"type": "dense", "units": 2}],
                       {"type": "mse", "steps": "all"}, bptt={"truncate": 4}, steps=7),
    "birnn_gru32": _seq([{"type": "birnn", "units": 3, "cell": "gru"},
                         {"type": "dense", "units": 3}],
                        {"type": "softmax_cross_entropy", "steps": "last"}, dtype="float32"),
    "rnn_labels": _seq([{"type": "rnn", "units": 4}, {"type": "dense", "units": 3}],
                       "softmax_cross_entropy", regularization={"l2": 1e-2}),
    "cnn": interop_archs.CONV,
    "activations": {"name": "acts", "input": {"features": 3},
                    "layers": [{"type": "dense", "units": 4, "activation": a}
                               for a in ("sigmoid", "elu", "softplus", "silu", "leaky_relu")]
                    + [{"type": "dense", "units": 2}],
                    "loss": "sigmoid_binary_cross_entropy", "regularization": {"l2": 1e-3}},
    "transformer32": {"name": "tf32", "dtype": "float32", "input": {"tokens": 5, "steps": 4},
                      "layers": [{"type": "embedding", "units": 4},
                                 {"type": "attention", "heads": 1},
                                 {"type": "dense", "units": 2}],
                      "loss": {"type": "mse", "steps": "all"}},
    "transformer": interop_archs.TOKENS,
}


def _example(name):
    """An architecture of examples/ as a dict."""
    import yaml
    with open(os.path.join(os.path.dirname(HERE), "examples", name + ".yaml")) as fh:
        return yaml.safe_load(fh)


#: and every example architecture
for _name in ("digits_mlp", "digits_cnn", "sine_lstm", "tiny_transformer"):
    ARCHS[_name] = _example(_name)


def _data(mod, arch, n, seed=0, lengths=True):
    """params, x, y, v (dicts/arrays as the module takes them), lengths or None."""
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed=seed)
    for k in params:                   # nonzero biases too
        params[k] = params[k] + 0.1 * rng.standard_normal(params[k].shape).astype(mod.DTYPE)
    inp = arch["input"]
    if "tokens" in inp:
        x = rng.integers(0, inp["tokens"], (n, inp["steps"]))
    else:
        x = rng.standard_normal((n,) + tuple(mod.INPUT_SHAPE)).astype(mod.DTYPE)
    loss = arch["loss"] if isinstance(arch["loss"], dict) else {"type": arch["loss"]}
    seq = mod.STEPS is not None
    steps = mod.LOSS_ALL_STEPS
    lead = (n, mod.STEPS) if steps else (n,)
    K = mod.OUTPUT_UNITS
    if loss["type"] == "softmax_cross_entropy":
        y = rng.integers(0, K, lead)
    elif loss["type"] == "mse":
        y = rng.standard_normal(lead + (K,)).astype(mod.DTYPE)
    else:
        y = rng.uniform(0, 1, lead + (K,)).astype(mod.DTYPE)
    v = {k: rng.standard_normal(s).astype(mod.DTYPE) for k, s in mod.PARAM_SHAPES.items()}
    lens = rng.integers(1, mod.STEPS + 1, n) if seq and lengths else None
    if lens is not None:
        lens[0] = mod.STEPS
    return params, x, y, v, lens


def _export(arch, tmp, prefix, functions=ALL, **kw):
    out = tmp / prefix
    layout = export(arch, out, prefix=prefix, functions=functions, **kw)
    return out, layout


def _compile(out, prefix, extra=(), flags=STRICT, threads=False, libs=()):
    exe = out / ("driver_x" if extra or libs or threads else "driver")
    cmd = [CC, *flags, *extra, f"-DPREFIX={prefix}", f'-DHEADER="{prefix}.h"', f"-I{out}",
           DRIVER, str(out / f"{prefix}.c"), "-o", str(exe), *libs, "-lm"]
    if threads:
        cmd[1:1] = ["-DDRIVER_THREADS", "-pthread"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def _write(out, mod, params, x, y, v, lens):
    files = {}
    for name, arr, dtype in (("p", mod.flatten(params), mod.DTYPE), ("x", x, None),
                             ("y", y, None), ("v", mod.flatten(v), mod.DTYPE)):
        path = out / f"{name}.bin"
        if dtype is None:
            dtype = (np.int64 if arr.dtype.kind in "iu" and name == "x" else
                     np.int32 if arr.dtype.kind in "iu" else mod.DTYPE)
        np.ascontiguousarray(arr, dtype=dtype).tofile(path)
        files[name] = str(path)
    if lens is not None:
        np.asarray(lens, dtype=np.int32).tofile(out / "len.bin")
        files["len"] = str(out / "len.bin")
    else:
        files["len"] = "-"
    return files


def _run(exe, out, n, files, threads=0, wrap=(), env=None):
    res = subprocess.run([*wrap, str(exe), str(n), files["p"], files["x"], files["y"],
                          files["v"], files["len"], str(out / "out.bin"), str(threads)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, (res.returncode, res.stderr[-4000:])
    return np.fromfile(out / "out.bin", dtype=exe_dtype(out))


def exe_dtype(out):
    return np.float32 if (out / "dtype32").exists() else np.float64


def _expected(mod, params, x, y, v, lens, hessian=False):
    """What the driver writes: forward, loss, loss, gradient, hvp, ggn_vp
    (and the Hessian)."""
    fwd = mod.forward(params, x, lengths=lens)
    loss, g = mod.loss_and_grad(params, x, y, lengths=lens)
    out = [("forward", fwd.ravel()), ("loss", np.array([mod.loss(params, x, y, lengths=lens)])),
           ("loss_and_grad loss", np.array([loss])), ("gradient", mod.flatten(g)),
           ("hvp", mod.flatten(mod.hvp(params, x, y, v, lengths=lens))),
           ("ggn_vp", mod.flatten(mod.ggn_vp(params, x, y, v, lengths=lens)))]
    if hessian:
        out.append(("hessian", mod.hessian(params, x, y, lengths=lens).ravel()))
    return out


def _compare(got, expected, tol):
    at = 0
    for what, ref in expected:
        part = got[at:at + ref.size]
        at += ref.size
        err = np.abs(part - ref).max() / max(np.abs(ref).max(), 1e-30)
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"
    assert at == got.size


def _tol(mod):
    return 1e-12 if mod.DTYPE == np.float64 else 1e-5


def _setup(arch, tmp, builder, prefix, n=5, lengths=True, **kw):
    mod = builder(arch, "c")
    out, layout = _export(arch, tmp, prefix, **kw)
    if mod.DTYPE == np.float32:
        (out / "dtype32").write_text("")
    data = _data(mod, arch, n, lengths=lengths)
    return mod, out, layout, data, _write(out, mod, *data)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_export_matches_module(name, tmp_path, builder):
    """Strict C99 compile; every function equal to the Python C module's."""
    arch = ARCHS[name]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, f"n_{name}")
    exe = _compile(out, f"n_{name}")
    got = _run(exe, out, 5, files)
    _compare(got, _expected(mod, *data), _tol(mod))


@pytest.mark.parametrize("name,width", [("mlp", 64), ("lstm_trunc", 64), ("birnn_gru32", 64),
                                        ("cnn", 32), ("transformer", 32)])
def test_export_vector_width(name, width, tmp_path, builder):
    """-DNAME_VECTOR_BYTES: the product kernel's tile for that vector width
    (the width an AVX or AVX-512 target selects; plain C99 lowers the
    vectors on any target), strict C99, every function equal to the
    module's."""
    arch = ARCHS[name]
    prefix = f"v_{name}"
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, prefix)
    exe = _compile(out, prefix, [f"-D{prefix}_VECTOR_BYTES={width}"])
    got = _run(exe, out, 5, files)
    _compare(got, _expected(mod, *data), _tol(mod))


@pytest.mark.parametrize("name", ["mlp", "lstm_trunc", "birnn_gru32", "cnn", "transformer"])
def test_export_hessian(name, tmp_path, builder):
    """hessian (H·e_j for every j, chunks of directions) equals the module's."""
    arch = ARCHS[name]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "hs",
                                           functions=ALL + ["hessian"])
    got = _run(_compile(out, "hs"), out, 5, files)
    _compare(got, _expected(mod, *data, hessian=True), _tol(mod))


@pytest.mark.parametrize("name", ["lstm_trunc", "transformer"])
def test_export_without_lengths(name, tmp_path, builder):
    """lengths NULL: every step real, as the module without lengths."""
    arch = ARCHS[name]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "nolen", lengths=False)
    got = _run(_compile(out, "nolen"), out, 5, files)
    _compare(got, _expected(mod, *data), _tol(mod))


@pytest.mark.parametrize("name", ["mlp", "lstm_trunc", "cnn", "transformer"])
def test_work_bytes_macros(name, tmp_path, builder):
    """The header's sizes (printed by a C program) are the Python numbers,
    and the generated functions' workspaces the Python module's own."""
    arch = ARCHS[name]
    mod = builder(arch, "c")
    out, layout = _export(arch, tmp_path, "w", max_batch=9)
    item = np.dtype(mod.DTYPE).itemsize
    for fn, regions in layout.regions.items():
        ws = [r for r in regions if r.var == "ws_"][0]
        assert (ws.a, ws.b) == tuple(item * c for c in mod._WS[fn]), fn
    ns = [1, 2, 7, 64, 1000]
    lines = ['#include <stdio.h>', '#include "w.h"', "int main(void) {"]
    for n in ns:
        for fn in layout.functions:
            lines.append(f'printf("%zu\\n", (size_t){"w_" + fn.upper()}_WORK_BYTES({n}));')
        lines.append(f'printf("%zu\\n", (size_t)w_WORK_BYTES({n}));')
        lines.append(f'printf("%zu\\n", w_work_bytes({n}));')
    lines += ['printf("%zu %d %d\\n", (size_t)w_MAX_WORK_BYTES, w_N_PARAMS, w_MAX_BATCH);',
              "return 0; }"]
    (out / "sizes.c").write_text("\n".join(lines) + "\n")
    exe = out / "sizes"
    res = subprocess.run([CC, *STRICT, f"-I{out}", str(out / "sizes.c"), str(out / "w.c"),
                          "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    want = []
    for n in ns:
        want += [layout.work_bytes(n, fn) for fn in layout.functions]
        want += [layout.work_bytes(n), layout.work_bytes(n)]
    want += [layout.max_work_bytes, mod.N_PARAMS, 9]
    assert [int(g) for g in got] == want
    assert layout.max_work_bytes == layout.work_bytes(9)
    offsets = [layout.params[k][0] for k in mod.PARAM_SHAPES]
    assert offsets == list(np.cumsum([0] + [int(np.prod(s)) for s in
                                            mod.PARAM_SHAPES.values()])[:-1])


def test_two_networks_one_program(tmp_path, builder):
    """Three exports (the same architecture twice, under prefixes that
    differ only in case) link into one program; every external symbol is
    prefixed; no object has writable static data or calls an allocator,
    I/O or threads."""
    nm = shutil.which("nm")
    outs = []
    for prefix, name in (("neta", "mlp"), ("NETA", "mlp"), ("netc", "lstm_trunc")):
        out, _ = _export(ARCHS[name], tmp_path, prefix)
        obj = out / f"{prefix}.o"
        subprocess.run([CC, *STRICT, "-c", str(out / f"{prefix}.c"), "-o", str(obj)],
                       check=True)
        outs.append((prefix, out, obj))
        if nm:
            syms = subprocess.run([nm, "-g", "--defined-only", str(obj)], capture_output=True,
                                  text=True, check=True).stdout.split("\n")
            names = [s.split()[-1] for s in syms if s.strip()]
            assert names and all(s.startswith(prefix + "_") for s in names), names
            # no mutable static data (re-entrant), no allocation, I/O or threads
            local = subprocess.run([nm, "--defined-only", str(obj)], capture_output=True,
                                   text=True, check=True).stdout.split("\n")
            writable = [line for line in local if line.split()[1:2] and
                        line.split()[1] in "bBdDcCgGsS"]
            assert not writable, writable
            undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True,
                                       check=True).stdout.split()
            banned = ("malloc", "calloc", "realloc", "free", "printf", "fprintf", "puts",
                      "fopen", "fwrite", "fread", "exit", "abort", "pthread")
            assert not [u for u in undefined if u.lstrip("_").startswith(banned)], undefined
    main = tmp_path / "both.c"
    main.write_text('#include <stdio.h>\n#include "neta.h"\n#include "NETA.h"\n'
                    '#include "netc.h"\nint main(void) {\n'
                    '    printf("%zu %zu %zu\\n", neta_work_bytes(3), NETA_work_bytes(3), '
                    'netc_work_bytes(3));\n    return 0;\n}\n')
    exe = tmp_path / "both"
    cmd = [CC, *STRICT, *[f"-I{o}" for _, o, _ in outs], str(main),
           *[str(obj) for _, _, obj in outs], "-o", str(exe), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert int(got[0]) == int(got[1]) > 0 and int(got[2]) > 0
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx:     # the headers from C++ (extern "C"), linking the C objects
        main_cc = tmp_path / "both.cc"
        main_cc.write_text(main.read_text().replace("<stdio.h>", "<cstdio>"))
        res = subprocess.run([cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic",
                              *[f"-I{o}" for _, o, _ in outs], str(main_cc),
                              *[str(obj) for _, _, obj in outs], "-o", str(exe) + "_cc", "-lm"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        again = subprocess.run([str(exe) + "_cc"], capture_output=True, text=True,
                               check=True).stdout.split()
        assert again == got


def _openblas():
    try:
        import scipy_openblas32 as ob
    except ImportError:
        return None
    return ob


@pytest.mark.parametrize("name", ["mlp", "lstm_trunc", "birnn_gru32"])
def test_cblas(name, tmp_path, builder):
    """-DNAME_USE_CBLAS against the scipy-openblas32 wheel's OpenBLAS (its
    names are scipy_-prefixed: -DNAME_CBLAS_GEMM names the function), every
    product to the BLAS; with the loops' simd hints (-DNAME_OPENMP_SIMD)."""
    ob = _openblas()
    if ob is None:
        pytest.skip("scipy-openblas32 (a dependency of bpgen) is not importable")
    arch = ARCHS[name]
    prefix = f"b_{name}"
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, prefix)
    gemm = "scipy_cblas_sgemm" if mod.DTYPE == np.float32 else "scipy_cblas_dgemm"
    lib = ob.get_lib_dir()
    extra = [f"-D{prefix}_USE_CBLAS", f"-D{prefix}_CBLAS_GEMM={gemm}",
             "-fopenmp-simd", f"-D{prefix}_OPENMP_SIMD",
             f"-isystem{ob.get_include_dir()}", "-DBPG_BLAS_MIN_NN=0", "-DBPG_BLAS_MIN_TN=0",
             "-DBPG_BLAS_MIN_NT=0"]
    exe = _compile(out, prefix, extra, libs=[f"-L{lib}", f"-Wl,-rpath,{lib}",
                                             f"-l{ob.get_library()}"])
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, str(exe)], capture_output=True, text=True).stdout
        assert gemm in syms
    got = _run(exe, out, 5, files)
    _compare(got, _expected(mod, *data), _tol(mod))


@pytest.mark.parametrize("name", ["lstm_trunc", "transformer"])
def test_sanitizers(name, tmp_path, builder):
    """AddressSanitizer and UBSan, each workspace exactly its size (every
    function, the Hessian too)."""
    arch = ARCHS[name]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "san",
                                           functions=ALL + ["hessian"])
    probe = subprocess.run([CC, "-fsanitize=address,undefined", "-x", "c", "-", "-o",
                            str(tmp_path / "probe")], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{CC} cannot link with -fsanitize=address,undefined")
    exe = _compile(out, "san", ["-fsanitize=address,undefined",
                                "-fno-sanitize-recover=undefined", "-g"],
                   flags=[f for f in STRICT if f != "-O2"] + ["-O1"])
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    env.pop("LD_PRELOAD", None)
    got = _run(exe, out, 5, files, env=env)
    _compare(got, _expected(mod, *data, hessian=True), _tol(mod))


@pytest.mark.slow
def test_valgrind(tmp_path, builder):
    """valgrind memcheck: no invalid read or write, no uninitialised value used."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    arch = ARCHS["lstm_trunc"]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "vg", n=3,
                                           functions=ALL + ["hessian"])
    exe = _compile(out, "vg", ["-g"])
    got = _run(exe, out, 3, files, wrap=[valgrind, "-q", "--error-exitcode=9",
                                          "--leak-check=no"])
    _compare(got, _expected(mod, *data, hessian=True), _tol(mod))


@pytest.mark.parametrize("name", ["mlp", "lstm_trunc"])
def test_threads(name, tmp_path, builder):
    """loss_and_grad from 4 threads at once, each with its own workspace:
    every result bitwise the single-threaded one."""
    arch = ARCHS[name]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "thr")
    exe = _compile(out, "thr", threads=True)
    got = _run(exe, out, 5, files, threads=4)
    _compare(got, _expected(mod, *data), _tol(mod))


def test_example_and_makefile(tmp_path, builder):
    """The Makefile builds the library and example.c, which prints the
    module's loss and the checksums of its gradient and hvp."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    arch = ARCHS["lstm_trunc"]
    mod, out, layout, data, files = _setup(arch, tmp_path, builder, "ex",
                                           functions=None, max_batch=5)
    res = subprocess.run([make, "-C", str(out), f"CC={CC}",
                          "CFLAGS=" + " ".join(STRICT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (out / "libex.a").exists()
    res = subprocess.run([str(out / "example"), "5", files["p"], files["x"], files["y"],
                          "-l", files["len"], "-v", files["v"]],
                         capture_output=True, text=True, check=True)
    params, x, y, v, lens = data
    loss, g = mod.loss_and_grad(params, x, y, lengths=lens)
    hv = mod.flatten(mod.hvp(params, x, y, v, lengths=lens))
    weights = np.arange(mod.N_PARAMS) % 7 + 1
    printed = dict(line.split(" = ") for line in res.stdout.strip().split("\n"))
    assert abs(float(printed["loss"]) - loss) <= 1e-12 * abs(loss)
    for key, ref in (("gradient checksum", weights @ mod.flatten(g)),
                     ("hvp checksum", weights @ hv)):
        assert abs(float(printed[key]) - ref) <= 1e-10 * max(abs(ref), 1), key


#: the product kernel's tile (rows, elements a row) for each vector width it
#: can be compiled for (BPG_VECTOR_BYTES; 16 also: no vector types), by dtype
KERNEL_TILES = {
    ("float64", 16): (4, 8), ("float32", 16): (4, 16),
    ("float64", 32): (4, 8), ("float32", 32): (4, 16),
    ("float64", 64): (4, 8), ("float32", 64): (8, 16),
}


@pytest.mark.parametrize("dtype,width", sorted(KERNEL_TILES))
def test_own_product_kernel(dtype, width, tmp_path):
    """The export's product kernel equals a plain triple loop exactly (the
    same order of the sum over k) on every small shape: remainders of its
    tiles' rows and columns, A and B each transposed or not, leading
    dimensions, K = 0 and K around its panels of copied rows (BPG_KC);
    nothing read or written out of bounds (AddressSanitizer, UBSan).  Each
    tile the vector width can select (-DBPG_VECTOR_BYTES: the code is plain
    C or GCC's vector extension, which any x86-64 runs at any width)."""
    prelude = os.path.join(os.path.dirname(HERE), "bpgen", "c_export", "runtime", "prelude.c")
    src = tmp_path / "kernel.c"
    with open(prelude) as a, open(os.path.join(HERE, "export", "kernel.c")) as b:
        src.write_text(a.read() + "\n" + b.read())
    exe = tmp_path / "kernel"
    defines = ["-DBPG_PRODUCTS", f"-DBPG_VECTOR_BYTES={width}"] + (
        ["-DBPG_FLOAT32"] if dtype == "float32" else [])
    flags = [f for f in STRICT if f != "-O2"] + ["-O1", "-g", "-fsanitize=address,undefined",
                                                 "-fno-sanitize-recover=undefined"]
    res = subprocess.run([CC, *flags, *defines, str(src), "-o", str(exe), "-lm"],
                         capture_output=True, text=True)
    if res.returncode != 0 and "sanitize" in res.stderr:
        flags = STRICT
        res = subprocess.run([CC, *flags, *defines, str(src), "-o", str(exe), "-lm"],
                             capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    env.pop("LD_PRELOAD", None)
    res = subprocess.run([str(exe)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    checked, mr, nr = (int(v) for v in res.stdout.split())
    assert (mr, nr) == KERNEL_TILES[dtype, width]
    # rows 1..2*mr+1, columns 1..2*nr+3, 11 K, A and B each transposed or not
    assert checked == 2 * 2 * (2 * mr + 1) * (2 * nr + 3) * 11


@pytest.mark.slow
def test_cmake(tmp_path, builder):
    """CMakeLists.txt configures and builds the library and the example."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    mod, out, layout, data, files = _setup(ARCHS["mlp"], tmp_path, builder, "cm")
    build = tmp_path / "build"
    for cmd in ([cmake, "-S", str(out), "-B", str(build), f"-DCMAKE_C_COMPILER={CC}",
                 "-DCMAKE_C_FLAGS=" + " ".join(STRICT)], [cmake, "--build", str(build)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = subprocess.run([str(build / "example"), "5", files["p"], files["x"], files["y"]],
                         capture_output=True, text=True, check=True)
    params, x, y, v, lens = data
    loss = mod.loss(params, x, y)
    assert abs(float(res.stdout.split("\n")[0].split(" = ")[1]) - loss) <= 1e-12 * abs(loss)


def test_error_codes(tmp_path, builder):
    """Out-of-range labels, lengths and token ids are refused (ERR_INPUT)
    before any work; so are n < 1 (ERR_BATCH)."""
    arch = ARCHS["transformer"]
    out, layout = _export(arch, tmp_path, "e", max_batch=2)
    prog = r'''
#include <stdio.h>
#include <stdlib.h>
#include "e.h"
int main(void) {
    static e_real params[e_N_PARAMS];
    e_x_t x[2 * e_STEPS] = {0};
    e_y_t y[2 * e_STEPS] = {0};
    int32_t lengths[2] = {1, e_STEPS};
    e_real loss, *grad = calloc(e_N_PARAMS, sizeof *grad);
    static double fixed[e_MAX_WORK_BYTES / sizeof(double) + 1];   /* a constant expression */
    size_t bytes = e_WORK_BYTES(2);
    void *work = malloc(bytes);
    int ok = e_loss_and_grad(params, 2, x, lengths, y, &loss, grad, work, bytes) == e_OK;
    y[3] = e_OUTPUT_UNITS;
    ok = ok && e_loss_and_grad(params, 2, x, lengths, y, &loss, grad, work, bytes) == e_ERR_INPUT;
    y[3] = -1;
    ok = ok && e_loss(params, 2, x, lengths, y, &loss, work, bytes) == e_ERR_INPUT;
    y[3] = 0; lengths[1] = e_STEPS + 1;
    ok = ok && e_loss(params, 2, x, lengths, y, &loss, work, bytes) == e_ERR_INPUT;
    lengths[1] = 0;
    ok = ok && e_loss(params, 2, x, lengths, y, &loss, work, bytes) == e_ERR_INPUT;
    lengths[1] = 1; x[0] = e_X_BOUND;
    ok = ok && e_loss(params, 2, x, lengths, y, &loss, work, bytes) == e_ERR_INPUT;
    x[0] = 0;
    ok = ok && e_loss(params, 0, x, lengths, y, &loss, work, bytes) == e_ERR_BATCH;
    ok = ok && e_loss(params, -1, x, NULL, y, &loss, work, bytes) == e_ERR_BATCH;
    ok = ok && e_loss(params, 2, NULL, NULL, y, &loss, work, bytes) == e_ERR_NULL;
    ok = ok && e_work_bytes(INT64_MAX) == 0;
    ok = ok && e_loss(params, INT64_MAX, x, NULL, y, &loss, work, bytes) == e_ERR_BATCH;
    ok = ok && e_loss(params, e_MAX_BATCH, x, NULL, y, &loss, fixed, sizeof fixed) == e_OK;
    ok = ok && e_loss(params, 2, x, NULL, y, &loss, (char *)work + 4, bytes - 4) == e_ERR_WORK;
    printf("%d\n", ok);
    free(grad); free(work);
    return !ok;
}
'''
    (out / "err.c").write_text(prog)
    exe = out / "err"
    res = subprocess.run([CC, *STRICT, f"-I{out}", str(out / "err.c"), str(out / "e.c"), "-o",
                          str(exe), "-lm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "1"


@pytest.mark.parametrize("prefix", ["1net", "my-net", "int", "", "__x", "bpg_net", "a b"])
def test_bad_prefix(prefix, tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        export(ARCHS["mlp"], tmp_path / "o", prefix=prefix)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("functions, what", [("forward,nope", "unknown function"),
                                             ("", "at least one"),
                                             ("hvp,hvp", "twice")])
def test_bad_functions(functions, what, tmp_path):
    with pytest.raises(ValueError, match=what):
        export(ARCHS["mlp"], tmp_path / "o", functions=functions)


def test_cli(tmp_path):
    """bpgen export writes the four files; --out a file is one line, exit 2."""
    import yaml
    arch = tmp_path / "a.yaml"
    arch.write_text(yaml.safe_dump(ARCHS["mlp"]))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    res = subprocess.run([sys.executable, "-m", "bpgen", "export", str(arch), "--out",
                          str(tmp_path / "o"), "--prefix", "cli_net", "--max-batch", "4"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "o")) == ["CMakeLists.txt", "Makefile", "cli_net.c",
                                                  "cli_net.h", "example.c"]
    assert "#define cli_net_MAX_BATCH 4" in (tmp_path / "o" / "cli_net.h").read_text()
    (tmp_path / "file").write_text("")
    for args in (["--out", str(tmp_path / "file")], ["--out", str(tmp_path / "p"),
                                                      "--prefix", "9x"],
                 ["--out", str(tmp_path / "p"), "--max-batch", "0"]):
        res = subprocess.run([sys.executable, "-m", "bpgen", "export", str(arch), *args],
                             capture_output=True, text=True, env=env)
        assert res.returncode == 2
        lines = res.stderr.strip().split("\n")
        assert len(lines) == 1 and "error" in lines[0], res.stderr
    assert not (tmp_path / "p").exists()
