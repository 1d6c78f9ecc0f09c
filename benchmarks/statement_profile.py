"""Where a generated C module's ``loss_and_grad`` spends its time, per
generated statement: thread CPU time (CLOCK_THREAD_CPUTIME_ID) read after
each top-level statement of ``bpg_loss_and_grad`` in a copy of the module's
C source, compiled with the module's own flags (and its BLAS), called
through ctypes on the arrays the module's wrapper would pass.  Runtime
helpers are inlined, so a statement's time includes its helper's; a
product's includes OpenBLAS.  Each statement is named by the equation in
the comment above it (docs/performance.md quotes these tables).

    python benchmarks/statement_profile.py lenet [--calls 100] [--batch N] [--min 0.005]

Run pinned on one CPU with one thread for numbers that compare
(``taskset -c 1``, ``BPGEN_NUM_THREADS=1``); the module's own call takes
the same time to within the clock reads (the total and the sum of the
statements are printed, with the load average).

``--call`` profiles another entry point the same way: ``grad_terms``, or
the per-sample calls (issue 19) ``per_sample_grad_norms`` and
``clipped_grad`` (max_norm: the median per-sample norm, as
benchmarks/per_sample.py), whose statements are named by the comment
above each (their first statement, ``bpg_grad_terms``, is grad_terms).
The ``run.py`` cases and ``per_sample.py``'s (``ps_cnn_digits`` ...) are
accepted:

    python benchmarks/statement_profile.py ps_cnn_digits --call clipped_grad

``--call hessian_columns`` (the ``SECOND_ORDER`` cases too) profiles
every row of the Hessian as the module's ``hessian`` computes them, each
statement of the chunk loop summed over the chunks; its clock is the
time-stamp counter (a thread CPU clock read is a system call, ~1 us,
which doubled this call), scaled so the statements sum to the call's
thread CPU time.  ``--dir DIR`` profiles a module built there (e.g. by
``ab_modules.py --build``) instead of building one:

    python benchmarks/statement_profile.py hess_transformer --call hessian_columns --dir /tmp/B"""
import argparse
import ctypes
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402  (its cases; pins this process to one CPU, one thread, before NumPy)
import numpy as np  # noqa: E402

import bpgen  # noqa: E402
from ab_modules import load  # noqa: E402
from bpgen.backends.c.build import config_for  # noqa: E402
from bpgen.check import sample_point  # noqa: E402
from bpgen.spec import load_spec  # noqa: E402

FUNCTION = "BPG_ENTRY void bpg_%s("
CALLS = ("loss_and_grad", "grad_terms", "per_sample_grad_norms", "clipped_grad",
         "hessian_columns")
TIMER = """
#include <time.h>
static double bpg_prof_us[%d];
static struct timespec bpg_prof_last;
static inline void bpg_tick(int i)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    bpg_prof_us[i] += (t.tv_sec - bpg_prof_last.tv_sec) * 1e6
                      + (t.tv_nsec - bpg_prof_last.tv_nsec) * 1e-3;
    bpg_prof_last = t;
}
double *bpg_prof_times(void) { return bpg_prof_us; }
"""
#: hessian_columns' clock: the time-stamp counter (a read of the thread's
#: CPU clock is a system call, about 1 us: 130 statements over 176 chunks
#: doubled the call); its cycles are scaled to the call's thread CPU time
TSC = """
#include <x86intrin.h>
static double bpg_prof_us[%d];
static unsigned long long bpg_prof_last;
static inline void bpg_tick(int i)
{
    unsigned long long t = __rdtsc();
    bpg_prof_us[i] += (double)(t - bpg_prof_last);
    bpg_prof_last = t;
}
double *bpg_prof_times(void) { return bpg_prof_us; }
"""


def instrument(src: str, call: str = "loss_and_grad") -> tuple:
    """(source with a clock read after each top-level statement of
    bpg_<call>, the statements' names: the equation in the comment above,
    or for the per-sample calls any comment above)."""
    start = src.index(FUNCTION % call)
    any_comment = call in CALLS[2:4]
    # hessian_columns: also each statement of the chunk loop (its body, one
    # level in), summed over the chunks
    inner = call == "hessian_columns"
    body_open = src.index("{\n", start) + 2
    body_close = src.index("\n}\n", body_open)
    lines, labels, name, depth = [], [], "(declarations)", 0
    for line in src[body_open:body_close].split("\n"):
        s, indent = line.strip(), len(line) - len(line.lstrip(" "))
        # a call with a trailing comment (``bpg_seqmm(...);  /* qk */``) ends at its ";"
        code = re.sub(r"\s*/\*[^*]*\*/$", "", s) if not s.startswith("/*") else s
        top = (depth == 0 and indent == 4) or (inner and depth == 1 and indent == 8)
        if (top and s.startswith("/*") and ("=" in s or any_comment or inner)
                and not s.startswith("/* Grad of") and not s.startswith("/*   (")):
            name = s[3:-3]
        lines.append(line)
        depth += line.count("{") - line.count("}")
        level = 1 if inner and depth >= 1 else 0     # the statement's level, once it ends
        if (depth == level and (code.endswith(";") or s == "}") and indent >= 4 * (level + 1)
                and not s.startswith(("real *const", "double acc", "const int64_t", "(void)"))):
            labels.append(name)
            lines.append(f"    bpg_tick({len(labels) - 1});")
    decls = 0                           # the last of the function's first declarations
    while decls + 1 < len(lines) and lines[decls + 1].strip().startswith("real *const"):
        decls += 1
    lines.insert(decls + 1, "    bpg_prof_last = __rdtsc();" if inner else
                 "    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &bpg_prof_last);")
    return (src[:start] + (TSC if inner else TIMER) % max(1, len(labels)) + src[start:body_open]
            + "\n".join(lines) + src[body_close:]), labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from per_sample import _cases
    cases = {**run.CASES, **run.SECOND_ORDER, **_cases()}
    ap.add_argument("case", choices=sorted(cases))
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--call", choices=CALLS, default="loss_and_grad")
    ap.add_argument("--min", type=float, default=0.005,
                    help="print the statements of at least this fraction of the call (0: all)")
    ap.add_argument("--dir", help="a build of the case's module to profile (default: build one)")
    args = ap.parse_args()
    arch, n = cases[args.case][:2]
    n = args.batch or n
    tmp = tempfile.mkdtemp(prefix="bpgen_prof_")
    if args.dir:
        mod = load(args.dir, arch["name"], "profiled")
        src = open(os.path.join(args.dir, f"{arch['name']}_c.c"), encoding="utf-8").read()
    else:
        mod = bpgen.build(arch, backend="c", out_dir=tmp)
        src = open(os.path.join(tmp, f"{arch['name']}_c.c"), encoding="utf-8").read()
    if hasattr(mod, "set_threads"):
        mod.set_threads(1)
    src, labels = instrument(src, args.call)
    with open(os.path.join(tmp, "prof.c"), "w", encoding="utf-8") as fh:
        fh.write(src)
    import sysconfig
    config = config_for(arch.get("dtype", "float64"))
    cmd = (["gcc", *config.compile_args, "-w", "-shared", "-fPIC",
            "-I" + sysconfig.get_paths()["include"]]
           + [f"-I{d}" for d in config.include_dirs] + [os.path.join(tmp, "prof.c"), "-o",
                                                        os.path.join(tmp, "prof.so")]
           + [f"-L{d}" for d in config.library_dirs] + [f"-l{lib}" for lib in config.libraries]
           + config.link_args)
    subprocess.run(cmd, check=True)
    lib = ctypes.CDLL(os.path.join(tmp, "prof.so"))
    spec = load_spec(arch)
    params, x, y = sample_point(spec, mod, batch=n, seed=0)
    xm, n = mod._check_x(x)
    arrays = [*mod._xs(xm, n, None), mod._check_y(y, n, xm), *mod._check_params(params)]
    arrays = [np.ascontiguousarray(a) for a in arrays]
    dtype = arrays[-1].dtype
    a, b = mod._WS[args.call]
    extra = []
    if args.call == "loss_and_grad":
        size = 1 + mod.N_PARAMS
    elif args.call == "hessian_columns":    # every row, kc directions at once as the module's
        da, db = mod._WS_DIR["hessian_columns"]
        per_dir = (da * n + db) * dtype.itemsize
        kc = max(1, min(mod.N_PARAMS, mod.HESSIAN_CHUNK,
                        mod.HESSIAN_CHUNK_BYTES // per_dir if per_dir else mod.N_PARAMS))
        b += kc * (da * n + db)
        size = mod.N_PARAMS * mod.N_PARAMS
        extra = [ctypes.c_int64(v) for v in (0, mod.N_PARAMS, kc)]
    elif args.call == "grad_terms":     # its outputs: what the per-sample calls' workspace starts with
        size = (mod._WS["per_sample_grad_norms"][0] - a) * n + mod._WS["per_sample_grad_norms"][1]
    else:
        oa, ob = mod._PER_SAMPLE_OUT[args.call]
        size = oa * n + ob
    out, ws = np.zeros(size, dtype=dtype), np.zeros(a * n + b + 1, dtype=dtype)
    ptr = (lambda arr: arr.ctypes.data_as(ctypes.c_void_p))
    clip = []
    if args.call == "clipped_grad":     # half the samples clipped, as benchmarks/per_sample.py
        clip = [(ctypes.c_float if dtype == np.float32 else ctypes.c_double)(
            float(np.median(mod.per_sample_grad_norms(params, x, y))))]
    v = [None] if args.call == "hessian_columns" else []       # V: NULL, the unit vectors
    call = ([ctypes.c_int64(n)] + [ptr(arr) for arr in arrays] + clip + v + [ptr(out), ptr(ws)]
            + extra)
    entry = getattr(lib, "bpg_" + args.call)
    for _ in range(3):
        entry(*call)
    if args.call == "hessian_columns":
        want = mod._hessian_columns(n, arrays, 0, mod.N_PARAMS).ravel()
        if not np.allclose(out, want, rtol=0, atol=1e-12 * np.abs(want).max()):
            raise SystemExit("the instrumented copy's Hessian rows are not the module's")
    value, _ = mod.loss_and_grad(params, x, y)
    if args.call != "hessian_columns" and not np.isclose(out[0], value, rtol=1e-12, atol=0):
        raise SystemExit(f"the instrumented copy's loss {out[0]!r} is not the module's {value!r}")
    lib.bpg_prof_times.restype = ctypes.POINTER(ctypes.c_double)
    times = np.ctypeslib.as_array(lib.bpg_prof_times(), shape=(len(labels),))
    times[:] = 0
    t0 = time.thread_time()
    for _ in range(args.calls):
        entry(*call)
    total = (time.thread_time() - t0) / args.calls * 1e6
    if args.call == "hessian_columns":      # cycles -> us: the statements sum to the call
        times *= total * args.calls / times.sum()
    print(f"{args.case} {args.call}, N = {n}: {total:.0f} us a call (thread CPU, {args.calls} calls), "
          f"statements {times.sum() / args.calls:.0f}; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    per = {}
    for i, label in enumerate(labels):
        per[label] = per.get(label, 0.0) + times[i] / args.calls
    for label, us in sorted(per.items(), key=lambda kv: -kv[1]):
        if us >= args.min * total:
            print(f"{us:9.0f}  {label[:100]}")


if __name__ == "__main__":
    main()
