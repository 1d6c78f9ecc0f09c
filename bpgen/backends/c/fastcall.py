"""The C module's CPython entry points (``forward``, ``loss``,
``loss_and_grad``, ``hvp`` without the Python wrapper's per-call work): this module's
constants for the static code in ``runtime/fastcall.c`` and the adapter that
hands the parameters, one pointer array, to the generated functions.

Only numbers reach the C text (shapes, sizes, flags); the parameter keys are
read from the wrapper's ``PARAM_SHAPES`` when the entry points are installed.
An entry point whose outputs are not laid out as the static code expects is
left out (the module's Python implementation then serves every call).
"""
from __future__ import annotations

import math
import os

from ...derivation import Derived
from ...losses import LOSSES

__all__ = ["fastcall_source", "CDEF", "ENTRIES"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: the entry points, in the order of fastcall.c's bpgf_names
ENTRIES = ("forward", "loss", "loss_and_grad", "hvp")
#: what the wrapper calls through cffi (install, the tests' counters, release,
#: the split calls of the Python path)
CDEF = ["int bpgf_install(void *globals);", "int64_t bpgf_count(int entry, int fell_back);",
        "void bpgf_release_workspace(void);",
        # the calls themselves (runtime/split.c), also from the Python path
        "int bpg_entry_have(int entry);", "void bpg_split_rule(int64_t *rows, double *work);",
        "int64_t bpg_split_calls(void);", "void bpg_split_together(int64_t *least);",
        "int64_t bpg_split_products(void);", "size_t bpg_entry_ws(int entry, int64_t N);",
        "int bpg_entry_run(int entry, int64_t N, const void *x, const real *mk, const real *y, "
        "const real *const *p, const real *const *v, real *out, real *ws, size_t cap);"]


def _int(value) -> int:
    """A non-negative Python int (what every constant printed here must be)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AssertionError(f"fastcall: expected a non-negative integer, got {value!r}")
    return value


def _enabled(derived: Derived, name: str, shapes: list, steps: int, out_units: int,
             seq_out: bool, n_masks: int = 0) -> bool:
    """The generated function's inputs and outputs are as fastcall.c expects
    (its inputs x, a sequence's masks, which the adapter makes, then y, the
    parameters and v): forward's one output (N, K) or time-major (T*N, K); loss's the scalar;
    loss_and_grad's the scalar, then one gradient per parameter, in order and
    of its size (fastcall.c makes the gradients' views from those sizes);
    hvp's inputs x, y, the parameters and v, its outputs one block per
    parameter likewise, from the start."""
    prog = derived.programs.get(name)
    if prog is None:
        return False
    layout = derived.layout(name)
    n_in = len(prog.inputs) - n_masks
    if name == "forward":
        rows = steps if seq_out else 1
        return n_in == 1 + len(shapes) and layout == [(0, 0, rows * out_units, 0, out_units)]
    sizes, offset = [math.prod(s) for s in shapes], 0
    if name == "hvp":
        if n_in != 2 + 2 * len(shapes):
            return False
    elif n_in != 2 + len(shapes) or not layout or layout[0] != (0, 0, 0, 1, 1):
        return False
    elif name == "loss":
        return len(layout) == 1
    else:
        sizes = [1] + sizes
    if len(layout) != len(sizes):
        return False
    for (oa, ob, a, b, _), size in zip(layout, sizes):
        if (oa, ob, a, b) != (0, offset, 0, size):
            return False
        offset += size
    return True


def _target_lines(spec) -> list:
    """The loss's target facts (its ``target_kind`` and ``target_range``) as
    the macros fastcall.c reads: labels to one-hot, or real targets checked
    finite (and in [lo, hi])."""
    loss = LOSSES[spec.loss.type]
    lines = [f"#define BPGF_TARGET_LABELS {int(loss.target_kind == 'labels')}"]
    if loss.target_range is None:
        return lines + ["#define BPGF_TARGET_RANGE 0"]
    lo, hi = (float(b) for b in loss.target_range)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise AssertionError(f"fastcall: target range {loss.target_range!r} is not finite")
    return lines + ["#define BPGF_TARGET_RANGE 1", f"#define BPGF_TARGET_LO {lo!r}",
                    f"#define BPGF_TARGET_HI {hi!r}"]


def _x_lines(inp) -> list:
    """The input kind's x, for fastcall.c: its element type, NumPy type
    number and, for integer x, the bound of its values (checked in C)."""
    if inp.x_dtype is None:
        return ["typedef real bpgf_x_t;  /* x's elements (the input kind's) */",
                "#define BPGF_X_TYPENUM BPGF_TYPENUM"]
    if inp.x_dtype not in _INT_TYPES:
        raise AssertionError(f"fastcall: unknown integer dtype {inp.x_dtype!r}")
    return [f"typedef {inp.c_type} bpgf_x_t;  /* x's elements (the input kind's) */",
            f"#define BPGF_X_TYPENUM {_INT_TYPES[inp.x_dtype]}",
            f"#define BPGF_X_BOUND {_int(inp.bound)}  /* x's values lie in [0, this) */"]


#: the integer dtypes an input kind's x may have, and their NumPy type numbers
_INT_TYPES = {"int8": "NPY_INT8", "int16": "NPY_INT16", "int32": "NPY_INT32",
              "int64": "NPY_INT64", "uint8": "NPY_UINT8", "uint16": "NPY_UINT16",
              "uint32": "NPY_UINT32", "uint64": "NPY_UINT64"}


def fastcall_source(derived: Derived, functions: list, bytes_per_sample: int) -> str:
    """The C text of this module's entry points: its constants, the call
    adapter, then runtime/fastcall.c; "" when none applies.  ``functions``:
    the emitter's (their workspace sizes); ``bytes_per_sample``: the
    wrapper's _BYTES_PER_SAMPLE (the batch-size limit)."""
    spec = derived.spec
    shapes = [tuple(_int(d) for d in s) for s in spec.param_shapes.values()]
    in_shape = tuple(_int(d) for d in spec.input.shape)
    steps = _int(spec.input.steps or 0)
    out_units = _int(spec.output_shape[-1])
    seq_out = spec.input.is_sequence and len(spec.output_shape) == 2
    all_steps = seq_out and spec.loss.steps == "all"
    if not shapes:
        return ""
    n_masks = len(derived.base.masks)
    have = {name: _enabled(derived, name, shapes, steps, out_units, seq_out, n_masks)
            for name in ENTRIES}
    if not any(have.values()):
        return ""
    ws = {f["name"]: tuple(_int(v) for v in f["ws"]) for f in functions}
    have["hvp"] = have["hvp"] and "hvp" in ws
    n_params = sum(math.prod(s) for s in shapes)
    # the first-order functions' work (hvp's is ~3x theirs, so it lets go of
    # the GIL from a smaller batch)
    per_sample = max(_int(derived.programs[n].workspace_size[0]) for n in ENTRIES[:3])
    forward_layout = derived.layout("forward")[0]
    lines = [
        "/* ---- the CPython entry points (runtime/fastcall.c below): this module's "
        "constants ---- */",
        f"#define BPGF_NPARAM_ARRAYS {len(shapes)}",
        f"#define BPGF_MAX_NDIM {max(len(s) for s in shapes)}",
        f"static const int bpgf_param_ndim[{len(shapes)}] = "
        f"{{{', '.join(str(len(s)) for s in shapes)}}};",
        f"static const int64_t bpgf_param_dims[{len(shapes)}][{max(len(s) for s in shapes)}] = "
        f"{{{', '.join('{' + ', '.join(map(str, s)) + '}' for s in shapes)}}};",
        f"static const int64_t bpgf_param_size[{len(shapes)}] = "
        f"{{{', '.join(str(math.prod(s)) for s in shapes)}}};",
        f"#define BPGF_IN_NDIM {len(in_shape)}",
        f"static const int64_t bpgf_in_dims[{len(in_shape)}] = "
        f"{{{', '.join(map(str, in_shape))}}};",
        f"#define BPGF_IN_SIZE {math.prod(in_shape)}  /* elements of one sample's x */",
        f"#define BPGF_STEPS {steps}  /* 0: not a sequence */",
        *_x_lines(spec.input),
        f"#define BPGF_K {out_units}",
        *_target_lines(spec),
        f"#define BPGF_LOSS_ALL_STEPS {int(all_steps)}",
        f"#define BPGF_SEQ_OUT {int(seq_out)}",
        f"#define BPGF_BYTES_PER_SAMPLE {_int(bytes_per_sample)}",
        # the batch split's default (runtime/split.c, docs/performance.md):
        # sequences and images split from 8 samples a slice, networks of
        # dense layers alone from 32 (each slice sums its own gradient, as
        # large as the parameters, and a dense network's work per sample is
        # about as large: the slices' extra sums are ~1/32 of their work)
        f"#define BPGS_MIN_ROWS {8 if steps or len(in_shape) > 1 else 32}",
        "/* work of one sample, roughly: the GIL is let go from N * this >= BPGF_GIL_WORK */",
        f"#define BPGF_WORK_PER_SAMPLE {n_params * max(steps, 1) + per_sample}",
        f"#define BPGF_OUT_FORWARD_A {_int(forward_layout[2])}",
        f"#define BPGF_OUT_FORWARD_B {_int(forward_layout[3])}",
        f"#define BPGF_OUT_LOSS_B {sum(_int(b) for _, _, _, b, _ in derived.layout('loss'))}",
        "#define BPGF_OUT_LOSS_AND_GRAD_B "
        f"{sum(_int(b) for _, _, _, b, _ in derived.layout('loss_and_grad'))}",
        f"#define BPGF_OUT_HVP_B {n_params if have['hvp'] else 0}",
    ]
    fn_ws = []
    for name in ENTRIES:
        a, b = ws.get(name, (0, 0))
        # the workspace the call plans: the function's own, then the masks
        # (n_masks rows of T*N), which the adapter writes past it
        lines += [f"#define BPGF_WS_{name.upper()}_A {a + n_masks * steps}",
                  f"#define BPGF_WS_{name.upper()}_B {b}",
                  f"#define BPGF_HAVE_{name.upper()} {int(have[name])}"]
        fn_ws.append(f"(size_t){a} * (size_t)N + {b}")
    lines += [f"#define BPGF_N_MASKS {n_masks}  /* a sequence's masks after x (lengths) */"]
    if n_masks:
        lines += [
            "/* where a call of N samples keeps its masks in its workspace: past the",
            "   generated function's own */",
            "static size_t bpgf_mask_at(int entry, int64_t N)",
            "{",
            f"    return entry == 0 ? {fn_ws[0]} : entry == 1 ? {fn_ws[1]}",
            f"        : entry == 2 ? {fn_ws[2]} : {fn_ws[3]};",
            "}",
        ]
    ps = ", ".join(f"p[{i}]" for i in range(len(shapes)))
    ms = "".join(f"m + {i * steps}*N, " for i in range(n_masks))
    lines += [
        "",
        "/* the generated functions, the parameters (and hvp's v) taken from "
        "pointer arrays (entry: 0 forward, 1 loss, 2 loss_and_grad, 3 hvp) */",
        "static void bpgf_call(int entry, int64_t N, const bpgf_x_t *x, const real *mk,",
        "                      const real *y, const real *const *p, const real *const *v,",
        "                      real *out, real *ws)",
        "{",
    ]
    if n_masks:
        lines += [
            "    /* mk: the masks (BPGF_N_MASKS blocks of T*N, lengths given); NULL: a",
            "       call without lengths: every step real (mask 1), and a reversed",
            "       loop's truncation every k steps from the last step (0 there) */",
            "    const real *m = mk;",
            "    if (!m) {",
            "        real *w = ws + bpgf_mask_at(entry, N);",
            "        for (int64_t k = 0; k < (int64_t)BPGF_STEPS * N; k++) w[k] = 1;",
        ]
        if n_masks == 2:
            k = _int(spec.truncate)
            lines += [
                "        for (int64_t t = 0; t < BPGF_STEPS; t++)",
                "            for (int64_t n = 0; n < N; n++)",
                f"                w[(BPGF_STEPS + t) * N + n] = (BPGF_STEPS - 1 - t) % {k} == 0 ? 0 : 1;",
            ]
        lines += ["        m = w;", "    }"]
    else:
        lines += ["    (void)mk;"]
    lines += [
        "    if (entry == 0)",
        f"        bpg_forward(N, x, {ms}{ps}, out, ws);",
        "    else if (entry == 1)",
        f"        bpg_loss(N, x, {ms}y, {ps}, out, ws);",
        "    else if (entry == 2)",
        f"        bpg_loss_and_grad(N, x, {ms}y, {ps}, out, ws);",
    ]
    if have["hvp"]:
        vs = ", ".join(f"v[{i}]" for i in range(len(shapes)))
        lines += ["    else",
                  f"        bpg_hvp(N, x, {ms}y, {ps}, {vs}, out, ws);"]
    else:
        lines += ["    (void)v;"]
    lines += [
        "}",
        "",
    ]
    static = []
    for part in ("fastcall.c", "split.c"):     # the entry points, then the batch split
        with open(os.path.join(_HERE, "runtime", part), encoding="utf-8") as fh:
            static.append(fh.read().strip("\n"))
    return "\n".join(lines) + "\n" + "\n\n".join(static)
