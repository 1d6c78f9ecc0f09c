#!/usr/bin/env python
"""Run every generated C function once under valgrind's memcheck.

    python scripts/memcheck.py [--keep] [--origins] [--n N] [--self-test]

Builds one small module per family (dense with layernorm, LSTM, CNN) with
the C backend and the normal build flags (OpenBLAS included: unlike
AddressSanitizer, valgrind also sees what the BLAS reads and writes through
the pointers and leading dimensions bpgen hands it), into a temporary
directory.  Then a child Python process, under

    valgrind --tool=memcheck --error-exitcode=1 (PYTHONMALLOC=malloc)

imports each module from there and calls each public function once
(forward, loss, loss_and_grad, hvp, hmp, ggn_vp, grad_factors, hessian,
hessian_diag, hessian_blocks), each with a workspace allocated afresh at
exactly that function's size (release_workspace() first), and then each
generated C function (every ``bpg_<name>`` of ``_OUTPUTS``) directly with an
output and a workspace of exactly their declared sizes.

Prints the number of errors of each kind (invalid reads and writes,
uninitialised values, ...), in all and in the bpgen extensions
(``_bpgen_*``: an error with such a frame on its stack, which includes a
BLAS call made from one), with the stacks of the latter.  Exits 1 if any
invalid read or write lies in a bpgen extension, or if the child fails; 0
otherwise (errors elsewhere, e.g. in CPython or NumPy, are reported only).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARCHS = {
    "dense": {"name": "mc_dense", "input": {"features": 6},
              "layers": [{"type": "dense", "units": 5, "activation": "tanh"},
                         {"type": "layernorm"},
                         {"type": "dense", "units": 4, "activation": "relu"},
                         {"type": "dense", "units": 3}],
              "loss": "softmax_cross_entropy", "regularization": {"l2": 0.01}},
    "lstm": {"name": "mc_lstm", "input": {"features": 3, "steps": 4},
             "layers": [{"type": "lstm", "units": 3}, {"type": "dense", "units": 2}],
             "loss": {"type": "mse", "steps": "last"}, "bptt": {"truncate": 2}},
    "cnn": {"name": "mc_cnn", "input": {"channels": 2, "height": 6, "width": 5},
            "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1,
                        "activation": "relu"},
                       {"type": "maxpool2d", "size": 2},
                       {"type": "avgpool2d", "size": 2, "stride": 1},
                       {"type": "flatten"},
                       {"type": "dense", "units": 2}],
            "loss": "sigmoid_binary_cross_entropy"},
}

# Noise from outside bpgen.  pymalloc's address_in_range reads memory it
# does not own, by design (PYTHONMALLOC=malloc mostly avoids it); CPython
# 3.11 makes uninitialised-value reports in its own code (small ints, frame
# clearing, the GC), and ld.so's strncmp reads 8 bytes at a time past the
# end of short strings while it expands an RPATH.  Only errors whose
# innermost frame is in CPython or ld.so are suppressed: a frame in a
# _bpgen_ extension (or a BLAS it calls) is never the innermost one of these.
SUPPRESSIONS = """
{
   cpython-address-in-range
   Memcheck:Addr4
   fun:address_in_range
}
{
   cpython-address-in-range-cond
   Memcheck:Cond
   fun:address_in_range
}
{
   cpython-uninit-cond
   Memcheck:Cond
   obj:*/libpython3*
}
{
   cpython-uninit-value
   Memcheck:Value8
   obj:*/libpython3*
}
{
   cpython-static-uninit-cond
   Memcheck:Cond
   obj:*/bin/python3*
}
{
   cpython-static-uninit-value
   Memcheck:Value8
   obj:*/bin/python3*
}
{
   ldso-strncmp-rpath
   Memcheck:Addr8
   fun:strncmp
   fun:is_dst
}
"""

CHILD = textwrap.dedent("""
    import importlib.util
    import sys

    import numpy as np

    N = int(sys.argv[1])
    SELF_TEST = sys.argv[2] == "1"


    def load(path):
        name = "mc_" + str(abs(hash(path)))
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


    def data(mod, rng):
        params = {k: (a + 0.1 * rng.standard_normal(a.shape)).astype(mod.DTYPE)
                  for k, a in mod.init_params(seed=0).items()}
        v = {k: rng.standard_normal(a.shape).astype(mod.DTYPE) for k, a in params.items()}
        x = rng.standard_normal((N,) + mod.INPUT_SHAPE).astype(mod.DTYPE)
        lead = (N, mod.STEPS) if mod.LOSS_ALL_STEPS else (N,)
        if mod.LOSS == "softmax_cross_entropy":
            y = rng.integers(0, mod.OUTPUT_UNITS, size=lead)
        elif mod.LOSS == "sigmoid_binary_cross_entropy":
            y = rng.uniform(0, 1, size=lead + (mod.OUTPUT_UNITS,)).astype(mod.DTYPE)
        else:
            y = rng.standard_normal(lead + (mod.OUTPUT_UNITS,)).astype(mod.DTYPE)
        return params, x, y, v


    for path in sys.argv[3:]:
        mod = load(path)
        rng = np.random.default_rng(0)
        params, x, y, v = data(mod, rng)
        V = rng.standard_normal((mod.N_PARAMS, 2)).astype(mod.DTYPE)
        calls = [("forward", lambda: mod.forward(params, x)),
                 ("loss", lambda: mod.loss(params, x, y)),
                 ("loss_and_grad", lambda: mod.loss_and_grad(params, x, y)),
                 ("hvp", lambda: mod.hvp(params, x, y, v)),
                 ("hmp", lambda: mod.hmp(params, x, y, V)),
                 ("ggn_vp", lambda: mod.ggn_vp(params, x, y, v)),
                 ("grad_factors", lambda: mod.grad_factors(params, x, y)),
                 ("hessian_diag", lambda: mod.hessian_diag(params, x, y)),
                 ("hessian_blocks", lambda: mod.hessian_blocks(params, x, y))]
        if mod.N_PARAMS <= 200:
            calls.append(("hessian", lambda: mod.hessian(params, x, y)))
        for fn, call in calls:
            mod.release_workspace()      # a workspace of exactly this function's size
            call()
            print(f"memcheck child: {mod.EXTENSION}: {fn}", flush=True)
        # every generated C function, with buffers of exactly the declared sizes
        xm, n = mod._check_x(x)
        arrays = {"x": xm, "y": mod._check_y(y, n)}
        for key, m, vm in zip(mod.PARAM_SHAPES, mod._check_params(params),
                              mod._check_params(v, "v")):
            arrays[key.replace(".", "_")] = m
            arrays["v_" + key.replace(".", "_")] = vm
        for line in mod.CDEF.splitlines():
            name = line.split("(")[0].split()[-1][len("bpg_"):]
            if name not in mod._OUTPUTS:
                continue
            args = [a.replace("*", " ").split()[-1] for a in line.split("(")[1].split(",")]
            a, b = mod._OUT_SIZE[name]
            wa, wb = mod._WS[name]
            out = np.empty(a * n + b, dtype=mod.DTYPE)
            ws = np.empty(max(wa * n + wb, 1), dtype=mod.DTYPE)
            fb = mod.ffi.from_buffer
            getattr(mod.lib, "bpg_" + name)(
                n, *[fb(mod._PTR, arrays[arg]) for arg in args[1:-2]],
                fb(mod._PTR, out, require_writable=True), fb(mod._PTR, ws, require_writable=True))
            if not np.isfinite(out).all():
                raise SystemExit(f"{mod.EXTENSION}: bpg_{name}: non-finite output")
            print(f"memcheck child: {mod.EXTENSION}: bpg_{name} (direct)", flush=True)
    if SELF_TEST:     # a deliberate write one element past the output (exact block)
        xm, n = mod._check_x(x)
        a, b = mod._OUT_SIZE["forward"]
        out = np.empty(a * n + b - 1, dtype=mod.DTYPE)
        ws = np.empty(mod._WS["forward"][0] * n + mod._WS["forward"][1] + 1, dtype=mod.DTYPE)
        fb = mod.ffi.from_buffer
        mod.lib.bpg_forward(n, fb(mod._PTR, xm),
                            *[fb(mod._PTR, m) for m in mod._check_params(params)],
                            fb(mod._PTR, out, require_writable=True),
                            fb(mod._PTR, ws, require_writable=True))
        print("memcheck child: self-test call made", flush=True)
    print("memcheck child: OK", flush=True)
""")

INVALID = ("InvalidRead", "InvalidWrite")


def build(out_root):
    """Build the modules (normal flags); the paths of their wrappers."""
    # the normal build: no sanitizer (it would need libasan), and no
    # -march=native (valgrind does not know AVX-512)
    for var in ("BPGEN_SANITIZE", "BPGEN_NATIVE"):
        os.environ.pop(var, None)
    sys.path.insert(0, ROOT)
    import bpgen
    from bpgen.backends.c.build import BUILD
    print(f"build flags: {' '.join(BUILD.cflags)}; large products: "
          f"{BUILD.blas or 'inline (no BLAS installed)'}")
    paths = []
    for family, arch in ARCHS.items():
        t0 = time.perf_counter()
        mod = bpgen.build(arch, backend="c", out_dir=os.path.join(out_root, family))
        print(f"built {family}: {mod.EXTENSION} (N_PARAMS {mod.N_PARAMS}, "
              f"{time.perf_counter() - t0:.1f} s)")
        paths.append(mod.__file__)
    return paths


def parse(xml_path):
    """[(kind, what, frames, count)] of the unsuppressed errors, and the
    number of suppressed ones."""
    tree = ET.parse(xml_path)
    suppressed = sum(int(p.findtext("count") or 0)
                     for sc in tree.getroot().iter("suppcounts") for p in sc.iter("pair"))
    counts = {}
    for pair in tree.getroot().iter("errorcounts"):
        for p in pair.iter("pair"):
            counts[p.findtext("unique")] = int(p.findtext("count"))
    errors = []
    for err in tree.getroot().iter("error"):
        what = err.findtext("what") or err.findtext("xwhat/text") or ""
        aux = err.findtext("auxwhat") or ""
        frames = []
        stack = err.find("stack")
        for fr in (stack.iter("frame") if stack is not None else []):
            frames.append((fr.findtext("fn") or "???", fr.findtext("obj") or "",
                           fr.findtext("file") or "", fr.findtext("line") or ""))
        errors.append((err.findtext("kind"), what + (f" ({aux})" if aux else ""), frames,
                       counts.get(err.findtext("unique"), 1)))
    return errors, suppressed


def in_bpgen(frames):
    return any(os.path.basename(obj).startswith("_bpgen_") for _, obj, _, _ in frames)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--origins", action="store_true",
                    help="--track-origins=yes (slower: where uninitialised values come from)")
    ap.add_argument("--n", type=int, default=5, help="batch size (default 5)")
    ap.add_argument("--self-test", action="store_true",
                    help="also make one deliberate out-of-bounds write from C (must fail)")
    args = ap.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if not valgrind:
        print("memcheck.py: valgrind not found", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bpgen-memcheck.")
    try:
        paths = build(tmp)
        supp = os.path.join(tmp, "cpython.supp")
        with open(supp, "w") as fh:
            fh.write(SUPPRESSIONS)
        child = os.path.join(tmp, "child.py")
        with open(child, "w") as fh:
            fh.write(CHILD)
        xml, log = os.path.join(tmp, "memcheck.xml"), os.path.join(tmp, "memcheck.log")
        cmd = [valgrind, "--tool=memcheck", "--error-exitcode=1", "--leak-check=no",
               "--show-leak-kinds=none", "--errors-for-leak-kinds=none",
               "--num-callers=40", f"--suppressions={supp}", "--xml=yes",
               f"--xml-file={xml}", f"--log-file={log}"]
        if args.origins:
            cmd.append("--track-origins=yes")
        cmd += [sys.executable, child, str(args.n), str(int(args.self_test))] + paths
        env = dict(os.environ, PYTHONMALLOC="malloc", OPENBLAS_NUM_THREADS="1",
                   BPGEN_NUM_THREADS="1")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        ok = "memcheck child: OK" in proc.stdout
        print(f"valgrind exit status {proc.returncode} after {elapsed:.0f} s; child "
              f"{'completed every call' if ok else 'FAILED'}")
        if not ok:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            with open(log) as fh:
                print(fh.read()[-3000:], file=sys.stderr)
        else:
            calls = [ln for ln in proc.stdout.splitlines() if ln.startswith("memcheck child: _")]
            print(f"calls made: {len(calls)} (public functions and direct bpg_* calls)")
        errors, suppressed = parse(xml) if os.path.exists(xml) else ([], 0)
        errors = [e for e in errors if not e[0].startswith("Leak_")]   # not checked
        kinds = sorted({e[0] for e in errors} | set(INVALID))
        print(f"{'error kind':<22}{'all (unique/total)':>20}{'in _bpgen_*':>16}")
        for kind in kinds:
            mine = [e for e in errors if e[0] == kind]
            ours = [e for e in mine if in_bpgen(e[2])]
            print(f"{kind:<22}{len(mine):>9}/{sum(e[3] for e in mine):<10}"
                  f"{len(ours):>7}/{sum(e[3] for e in ours):<8}")
        print(f"suppressed (CPython, ld.so noise): {suppressed}")
        invalid = sum(e[3] for e in errors if e[0] in INVALID)
        ours = [e for e in errors if in_bpgen(e[2])]
        print(f"invalid read/write: {invalid} in all, "
              f"{sum(e[3] for e in ours if e[0] in INVALID)} in bpgen extensions")
        for kind, what, frames, count in ours:
            print(f"\n{kind} (x{count}): {what}")
            for fn, obj, file, line in frames[:12]:
                where = f"{file}:{line}" if file else os.path.basename(obj)
                print(f"    {fn}  {where}")
        if args.keep:
            print(f"kept: {tmp}")
        failed = not ok or any(e[0] in INVALID for e in ours)
        print("memcheck.py: " + ("FAILED" if failed else "OK"))
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
