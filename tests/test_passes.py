"""The optimisation passes (bpgen.passes), each on a small hand-built
program, and what the emitters make of their decisions; the C backend's
variable prefix (a layer named like a C keyword, macro or libc symbol
builds and runs)."""
import dataclasses
import re

import numpy as np
import pytest
import sympy as sp

import bpgen
from bpgen.backends.c.emitter import PREFIX, CEmitter
from bpgen.backends.numpy.emitter import NumpyEmitter
from bpgen.ir import Op, Var
from bpgen.lower import Program
from bpgen.passes import (Hoisted, Transpose, merge_duplicates, optimise, plan_for)
from bpgen.passes.invariants import hoist_invariants
from bpgen.passes.storage import plan_storage
from bpgen.passes.transposes import Fresh, c_transposes, numpy_transposes

S = sp.Symbol
LOOP = {0: {"steps": 3, "reverse": False, "seq": "3*N", "label": "", "title": "t = 0 .. 2"}}


def program(ops, inputs, outputs, shapes, step_vars=()):
    """A Program of ``ops`` (variables' shapes in ``shapes``; a variable an
    op of loop 0 defines belongs to that loop)."""
    loops = {op.out: op.loop for op in ops}
    vars_ = {n: Var(n, s, "temp", n, False, loops.get(n)) for n, s in shapes.items()}
    return Program("f", list(inputs), list(outputs), list(ops), vars_, {o.out: o for o in ops},
                   {}, (0, 0), dict(LOOP), set(step_vars))


def mm(out, a, b, ta=False, tb=False, loop=None):
    return Op("matmul", out, (a, b), {"ta": ta, "tb": tb}, loop=loop)


def emap(out, expr, loop=None):
    return Op("map", out, tuple(sorted(s.name for s in expr.free_symbols)), {"expr": expr},
              loop=loop)


# ---- merge -----------------------------------------------------------------

def test_merge_duplicates_renames_uses_and_keeps_outputs_and_state_reads():
    ops = [emap("a", sp.tanh(S("x"))), emap("b", sp.tanh(S("x"))),
           emap("c", S("a") + S("b")),
           Op("prev", "p", ("h",), {}, loop=0), Op("prev", "q", ("h",), {}, loop=0),
           emap("o", sp.tanh(S("x")))]
    kept = merge_duplicates(ops, ["c", "o"])
    assert [op.out for op in kept] == ["a", "c", "p", "q", "o"]
    c = kept[1]
    assert c.args == ("a",) and c.attrs["expr"] == 2 * S("a")


# ---- transposes ------------------------------------------------------------

def _loop_products(extra=()):
    # in loop 0: A·Wᵀ (W fixed-size, invariant), A·Xᵀ (X per sample: no C copy),
    # A·Hᵀ with H a sequence (changes every step: no copy at all)
    ops = [emap("a", 2 * S("x"), loop=0), mm("p", "a", "W", tb=True, loop=0),
           mm("q", "a", "W", tb=True, loop=0), mm("r", "a", "U", tb=True, loop=0)]
    shapes = {"x": ("3*N", 4), "W": (5, 4), "U": (6, 4), "a": ("3*N", 4),
              "p": ("3*N", 5), "q": ("3*N", 5), "r": ("3*N", 6)}
    return program(ops + list(extra), ["x", "W", "U"], ["p", "q", "r"], shapes)


def test_c_transposes_one_copy_per_fixed_size_operand_before_its_first_loop():
    prog = _loop_products()
    assert c_transposes(prog) == {"W": (0, "W_T"), "U": (0, "U_T")}
    varying = dataclasses.replace(prog, vars={**prog.vars, "U": Var("U", ("N", 4))})
    assert c_transposes(varying) == {"W": (0, "W_T")}       # per-sample U: not copied


def test_numpy_transposes_rewrite_the_products_and_respect_varying():
    prog = _loop_products()
    printed, pre, new = numpy_transposes(prog, Fresh(prog.vars))
    assert pre == {"p": [Transpose(0, "W_T", "W")], "r": [Transpose(0, "U_T", "U")]}
    assert printed["q"].args == ("a", "W_T") and not printed["q"].attrs["tb"]
    assert new["W_T"].shape == (4, 5)
    printed, pre, _ = numpy_transposes(prog, Fresh(prog.vars), varying={"W"})
    assert set(pre) == {"r"} and "p" not in printed


# ---- loop-invariant factors ------------------------------------------------

def _loop_map():
    expr = sp.tanh(S("b")) * S("u") + sp.exp(S("c"))
    ops = [mm("u", "x", "W", loop=0), emap("y", expr, loop=0)]
    shapes = {"x": ("3*N", 4), "W": (4, 4), "b": (1, 4), "c": (1, 4), "u": ("3*N", 4),
              "y": ("3*N", 4)}
    return program(ops, ["x", "W", "b", "c"], ["y"], shapes)


def test_hoist_invariants_moves_step_invariant_factors_before_the_loop():
    prog = _loop_map()
    printed, pre, new = hoist_invariants(prog, Fresh(prog.vars))
    made = {h.expr: h.name for h in pre["y"]}
    assert set(made) == {sp.exp(S("c")), sp.tanh(S("b"))} and set(made.values()) == {
        "fac", "fac_1"} and all(h.loop == 0 for h in pre["y"])
    e, t = S(made[sp.exp(S("c"))]), S(made[sp.tanh(S("b"))])
    assert printed["y"].attrs["expr"] == e + t * S("u")
    assert printed["y"].args == ("fac", "fac_1", "u") and new["fac"].shape == (1, 4)
    printed, pre, _ = hoist_invariants(prog, Fresh(prog.vars), varying={"b"})
    assert [h.expr for h in pre["y"]] == [sp.exp(S("c"))]


# ---- storage ---------------------------------------------------------------

def test_plan_storage_placed_inplace_flat_workspace():
    ops = [mm("t1", "x", "W"), emap("t2", sp.tanh(S("t1"))),
           emap("a", 2 * S("t2")), emap("b", 3 * S("t2")), Op("concat", "o", ("a", "b"), {})]
    shapes = {"x": ("N", 4), "W": (4, 5), "t1": ("N", 5), "t2": ("N", 5), "a": ("N", 5),
              "b": ("N", 5), "o": ("N", 10)}
    prog = program(ops, ["x", "W"], ["o"], shapes)
    st = plan_storage(prog, Fresh(prog.vars))
    assert st.placed == {"a": ("o", 0), "b": ("o", 5)}
    assert st.inplace == {"t2": "t1"}        # the product's array, dead after tanh
    assert st.flat == "flat" and not st.views and not st.copy_loops
    assert {"t1", "t2"} <= st.workspace and "o" not in st.workspace


def _recurrence(source_is_input: bool):
    # h_t = tanh(prev(h) + x_t): the state read is a view of h's buffer, unless
    # it reads an input (then it copies, and the loop counts its iterations)
    src = "x" if source_is_input else "h"
    ops = [Op("prev", "hp", (src,), {}, loop=0), emap("h", sp.tanh(S("hp") + S("x")), loop=0)]
    shapes = {"x": ("3*N", 4), "hp": ("3*N", 4), "h": ("3*N", 4)}
    return program(ops, ["x"], ["h"], shapes)


@pytest.mark.parametrize("source_is_input", [False, True])
def test_state_reads_views_or_copies_and_the_loop_header(source_is_input):
    prog = optimise(_recurrence(source_is_input), ("numpy",))
    st = prog.plans["numpy"].storage
    if source_is_input:
        assert st.views == {} and st.copy_loops == {0}
    else:
        assert st.views == {"hp": "h"} and st.buffers == {"h": None} and not st.copy_loops
    lines = [line for b in NumpyEmitter(prog, "float64").blocks() for line in b["lines"]]
    assert any(line.startswith("for it in range(3):") for line in lines) == source_is_input
    assert any(line.startswith("for t in range(3):") for line in lines) != source_is_input


def test_emitters_print_the_plans():
    prog = optimise(_loop_products(), ("c", "numpy"))
    np_lines = [line for b in NumpyEmitter(prog, "float64").blocks() for line in b["lines"]]
    assert "W_T = numpy.ascontiguousarray(W.T)  # Wᵀ, contiguous" in np_lines
    em = CEmitter(prog, "float64", set(), transposes=prog.plans["c"].transposes)
    c_lines = [line for b in em.blocks() for line in b["lines"]]
    assert any(f"{PREFIX}W_T[j*5 + i] = {PREFIX}W[i*4 + j];" in line for line in c_lines)
    # the comment keeps the readable names and the product; the code reads the copy
    i = next(i for i, line in enumerate(c_lines) if line.strip() == "/* p = a·Wᵀ */")
    assert f"{PREFIX}W_T, " in c_lines[i + 1] and "bpg_gemm_nn" in c_lines[i + 1]
    prog = optimise(_loop_map(), ("numpy",))
    np_lines = [line for b in NumpyEmitter(prog, "float64").blocks() for line in b["lines"]]
    assert any("exp(c): every step at once" in line for line in np_lines)


def test_plan_for_replans_a_part_of_a_program():
    prog = optimise(_loop_products())
    assert plan_for(prog, "c") is prog.plans["c"]
    part = dataclasses.replace(prog, ops=prog.ops[:2], outputs=["p"])
    replanned = plan_for(part, "numpy")
    assert replanned is not prog.plans["numpy"] and replanned.ops == ("a", "p", "->", "p")
    assert replanned.pre["p"] == [Transpose(0, "W_T", "W")]
    assert plan_for(prog, "numpy", varying={"W"}) is not prog.plans["numpy"]
    fixed = optimise(_loop_products(), ("numpy",), varying={"W"})
    assert plan_for(fixed, "numpy", varying={"W"}) is fixed.plans["numpy"]
    assert set(fixed.plans["numpy"].pre) == {"a", "r"}     # 2x: hoisted; W: not copied
    assert isinstance(plan_for(optimise(_loop_map()), "numpy").pre["y"][0], Hoisted)


# ---- loop fusion and products added into maps (C) ------------------------

def _softmax_like():
    # e = exp(s); z = e·1; p = e / z (reads the run's row sum: a second phase);
    # g = 1ᵀ·p (a column sum); q = p ⊙ g (reads it: the run ends); r = q·W;
    # d = r + b (r read only here: added into d)
    ops = [emap("e", sp.exp(S("s"))), Op("sum", "z", ("e",), {"axis": 1}),
           emap("p", S("e") / S("z")), Op("sum", "g", ("p",), {"axis": 0}),
           emap("q", S("p") * S("g")), mm("r", "q", "W"), emap("d", S("r") + S("b"))]
    shapes = {"s": ("N", 4), "e": ("N", 4), "z": ("N", 1), "p": ("N", 4), "g": (1, 4),
              "q": ("N", 4), "W": (4, 3), "r": ("N", 3), "b": (1, 3), "d": ("N", 3)}
    return program(ops, ["s", "W", "b"], ["g", "d"], shapes)


def test_fusable_runs_phases_and_ends_and_accumulate():
    from bpgen.passes.accumulate import c_accumulations
    from bpgen.passes.fuse_loops import fusable_runs
    prog = _softmax_like()
    assert fusable_runs(prog) == {0: (0, 1, 2, 3)}
    assert c_accumulations(prog) == {"d": (S("b"), ("r",))}
    # in a time-step loop: not fused
    looped = _softmax_like()
    looped.ops = [dataclasses.replace(op, loop=0) for op in looped.ops]
    assert fusable_runs(looped) == {} and c_accumulations(looped) == {}
    # a product read twice is not added into a map
    twice = _softmax_like()
    twice.ops.append(emap("d2", 2 * S("r")))
    twice.vars["d2"] = Var("d2", ("N", 3))
    assert c_accumulations(twice) == {}


def test_c_emitter_prints_a_run_as_one_loop_and_adds_products():
    prog = optimise(_softmax_like(), ("c",))
    plan = prog.plans["c"]
    em = CEmitter(prog, "float64", set(), runs=plan.runs, accumulate=plan.accumulate)
    text = "\n".join(line for b in em.blocks() for line in b["lines"])
    # every statement's equation above the loop; one loop over the rows, two phases
    for eq in ("/* e = exp(s) */", "/* z = e·1 */", "/* p = e / z */", "/* g = 1ᵀ·p */"):
        assert eq in text
    assert text.count("for (int64_t rr = 0; rr < N; rr++)") == 1 + 2   # the run; q and b's fill
    assert text.count("for (int64_t cc = 0; cc < 4; cc++) {") == 3     # two phases, q
    # e is read by the second phase, p after the run: both stored, and read
    # as locals within their phase
    assert f"{PREFIX}e[k] = e_e;" in text and f"{PREFIX}p[k] = e_p;" in text
    assert f"const real e_p = {PREFIX}e[k]/{PREFIX}z[rr];" in text
    assert f"{PREFIX}z[rr] = (real)acc_z;" in text and f"{PREFIX}g[cc] += e_p;" in text
    # r is not stored: d = b, then d += q·W
    assert "/* r = q·W: added into d below */" in text
    assert f"bpg_gemm_nn_acc(N, 3, 4, {PREFIX}q, {PREFIX}W, {PREFIX}d);" in text
    assert f"{PREFIX}r)" not in text and f"{PREFIX}r," not in text


def test_a_sum_of_a_row_sum_goes_after_it():
    # rows one column wide: z = e·1 has the run's shape and t = z·1 reads it
    ops = [emap("e", sp.exp(S("s"))), Op("sum", "z", ("e",), {"axis": 1}),
           Op("sum", "t", ("z",), {"axis": 1}), emap("w", S("t") + S("e"))]
    shapes = {n: ("N", 1) for n in "sezt w".replace(" ", "")}
    prog = optimise(program(ops, ["s"], ["w"], shapes), ("c",))
    assert prog.plans["c"].runs == {0: (0, 1, 2, 3)}
    em = CEmitter(prog, "float64", set(), runs=prog.plans["c"].runs)
    lines = [line.strip() for b in em.blocks() for line in b["lines"]]
    # z is complete (stored) before the pass that sums it, t before w's
    assert (lines.index(f"{PREFIX}z[rr] = (real)acc_z;") < lines.index(f"acc_t += {PREFIX}z[k];")
            < lines.index(f"{PREFIX}t[rr] = (real)acc_t;")
            < lines.index(f"const real e_w = {PREFIX}e[k] + {PREFIX}t[k];"))


def test_c_invariants_hoists_costly_parts_and_keeps_divisions():
    """What a map computes the same along a row (a function of row values
    and scalars): a call or a root once per row; of a reciprocal only the
    base, so that the division stays (the same bits); nothing cheap."""
    from bpgen.primitives.map import _c_invariants

    class Em:
        dtype, used = "float64", set()

        def use(self, helper):
            self.used.add(helper)
    access = {"x": "x[k]", "s": "s[rr]", "t": "t[0]", "c": "c[cc]"}
    x, s, t, c = S("x"), S("s"), S("t"), S("c")
    cases = [
        # layernorm's 1/sqrt(var + eps): whole
        (x * (s / 64 + sp.Float(1e-5)) ** sp.Float(-0.5), ["(1.0/sqrt("], {"x[k]*h0", "h0*x[k]"}),
        # a division by a row value: its base only, still a division
        (x / (s / 64 + t), ["*s[rr] + t[0];"], {"x[k]/h0"}),
        # a call of row values and scalars
        (x * sp.exp(s - t), ["bpg_exp(s[rr] - t[0])"], {"x[k]*h0", "h0*x[k]"}),
    ]
    for expr, want, printed in cases:
        lines, new, names = _c_invariants(Em(), expr, access, ["s", "t"], "h")
        assert len(lines) == 1 and all(w in lines[0] for w in want), lines
        from bpgen.printers import CPrinter
        assert CPrinter({**access, **names}, "float64").doprint(new) in printed
    assert "exp" in Em.used
    # nothing worth it, or nothing invariant: unchanged
    for expr in (x * s + t, x / s, sp.exp(x + s), c * sp.sqrt(x), (x + s) ** sp.Float(-0.5)):
        assert _c_invariants(Em(), expr, access, ["s", "t"], "h") == ([], expr, {})


def test_c_emitter_hoists_a_rows_invariants_before_its_loop():
    """A run (and a lone map) computes a row's 1/sqrt(ss + eps) once per
    row, before the pass over the columns that reads it."""
    ops = [Op("sum", "ss", ("q",), {"axis": 1}),
           emap("xh", S("q") * (S("ss") / 4 + 1) ** sp.Rational(-1, 2)),
           emap("y", S("xh") / (S("ss") + 2) + S("b"))]
    shapes = {"q": ("N", 4), "ss": ("N", 1), "xh": ("N", 4), "y": ("N", 4), "b": (1, 4)}
    for runs in (True, False):
        prog = optimise(program(ops, ["q", "b"], ["y"], shapes), ("c",))
        em = CEmitter(prog, "float64", set(), runs=prog.plans["c"].runs if runs else {})
        lines = [line.strip() for b in em.blocks() for line in b["lines"]
                 if not line.strip().startswith("/*")]
        text = "\n".join(lines)
        root = next(i for i, line in enumerate(lines) if "sqrt(" in line)
        assert text.count("sqrt(") == 1 and lines[root].startswith("const real h")
        assert f"0.25*{PREFIX}ss[rr] + 1" in lines[root]
        # before the simd loop that reads it, inside the loop over the rows
        simd = next(i for i in range(root, len(lines)) if lines[i].startswith("#pragma omp simd"))
        rows = max(i for i in range(root) if lines[i].startswith("for (int64_t rr"))
        assert rows < root < simd
        assert re.search(r"/h\w+", text), text      # y's division by a hoisted ss + 2


# ---- the C prefix ----------------------------------------------------------

C_CLASH = ["errno", "NULL", "int", "size_t", "stdout", "EOF", "memcpy", "real", "ws", "M_PI"]


def test_c_variables_carry_the_prefix_and_clashing_layer_names_build(tmp_path):
    layers = [{"type": "dense", "units": 3, "activation": "tanh", "name": n}
              for n in C_CLASH[:-1]] + [{"type": "dense", "units": 2, "name": C_CLASH[-1]}]
    arch = {"name": "clash", "input": {"features": 4}, "layers": layers, "loss": "mse"}
    plain = {**arch, "name": "plain",
             "layers": [dict(lay, name=f"p{i}") for i, lay in enumerate(layers)]}
    ref = bpgen.build(plain, backend="numpy", out_dir=tmp_path / "plain")
    mod = bpgen.build(arch, backend="c", out_dir=tmp_path / "c")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    p = ref.init_params(seed=0)
    params = dict(zip(mod.PARAM_SHAPES, p.values()))
    assert float(mod.loss(params, x, y)) == pytest.approx(float(ref.loss(p, x, y)), rel=1e-10)
    g_ref, g = ref.loss_and_grad(p, x, y)[1], mod.loss_and_grad(params, x, y)[1]
    for (kr, vr), (k, v) in zip(g_ref.items(), g.items()):
        np.testing.assert_allclose(v, vr, rtol=1e-9, atol=1e-12)
    src = (tmp_path / "c" / "clash_c.c").read_text(encoding="utf-8")
    # the generated functions (not the runtime helpers pasted before them)
    funcs = [part.split("\n}\n", 1)[0] for part in src.split("\nBPG_ENTRY void bpg_")[1:]]
    declared = {n for f in funcs for n in re.findall(r"real \*const (\w+) =", f)
                + re.findall(r"const real \*restrict (\w+)", f)}
    # fixed locals of the generated functions (the per-sample ones:
    # bpgen/backends/c/per_sample.py, with clipped_grad's kept per-sample
    # gradients kept_0, kept_1, ...); every graph variable is prefixed
    graph = {n for n in declared - {"V", "out", "ws", "wsd", "bscratch", "vbuf", "clip", "g",
                                    "grads", "sq"} if not re.fullmatch(r"kept_\d+", n)}
    assert graph and all(n.startswith(PREFIX) for n in graph), sorted(
        n for n in graph if not n.startswith(PREFIX))


# ---- the workspace by liveness ---------------------------------------------

def test_reuse_workspace_shares_only_slots_of_disjoint_lifetimes():
    from bpgen.passes.allocate import reuse_workspace
    # a = tanh(x); b = a² + x; c = exp(b) (a dead: c in a's slot); d = c·W
    # (b dead: d in b's slot); o = tanh(d)
    ops = [emap("a", sp.tanh(S("x"))), emap("b", S("a") ** 2 + S("x")),
           emap("c", sp.exp(S("b"))), mm("d", "c", "W"), emap("o", sp.tanh(S("d")))]
    shapes = {"x": ("N", 4), "W": (4, 4), "a": ("N", 4), "b": ("N", 4), "c": ("N", 4),
              "d": ("N", 4), "o": ("N", 4)}
    prog = program(ops, ["x", "W"], ["o"], shapes)
    prog.workspace = {n: (8 * i, 0) for i, n in enumerate("abcd")}
    ws, size = reuse_workspace(prog)
    assert ws["a"] != ws["b"] and ws["b"] != ws["c"] and ws["c"] != ws["d"]
    assert ws["c"] == ws["a"] and ws["d"] == ws["b"] and size == (16, 0)
    # one run over a .. c (one loop): all three live together
    ws, size = reuse_workspace(prog, [[0, 1, 2]])
    assert len({ws[n] for n in "abc"}) == 3 and size == (24, 0)


SLOT_ARCHS = ["dense-relu-sce-l2", "attn-causal-sce-all", "block-prenorm-sce-last",
              "conv-avg-mse-pad", "lstm-mse-all-f32"]


@pytest.mark.parametrize("cid", SLOT_ARCHS)
def test_workspace_slots_of_live_temporaries_never_overlap(cid):
    """Every function's temporaries: two that an op touches at once, or that
    are both written before either is read for the last time (program
    order), never share memory (checked at two batch sizes); the workspace
    is no larger than one slot each.  Except a result written over its
    argument (bpgen.passes.in_place), when nothing reads the argument after
    that op: the two then share their slot exactly."""
    from bpgen.derivation import derive_all
    from bpgen.shapes import size_coeffs
    from bpgen.spec import load_spec
    from test_second_order import CASES, F32_CASES
    arch = {**CASES, **F32_CASES}[cid][0]
    derived = derive_all(load_spec(arch))
    for name, prog in derived.programs.items():
        if not prog.workspace:
            continue
        first, last = {}, {}
        for i, op in enumerate(prog.ops):
            for n in (op.out, *op.args):
                if n in prog.workspace:
                    first.setdefault(n, i)
                    last[n] = i
        loops = {}                      # a variable of a loop: live over the whole loop
        for i, op in enumerate(prog.ops):
            if op.loop is not None:
                loops.setdefault(op.loop, []).append(i)
        for i, op in enumerate(prog.ops):
            for n in (op.out, *op.args):
                if op.loop is not None and n in first:
                    first[n] = min(first[n], loops[op.loop][0])
                    last[n] = max(last[n], loops[op.loop][-1])
        for batch in (1, 7):
            def extent(n):
                a, b = prog.workspace[n]
                sa, sb = size_coeffs(prog.vars[n].shape if n not in prog.step_vars
                                     else ("N", prog.vars[n].shape[1]))
                return a * batch + b, (a + sa) * batch + b + sb
            in_place = prog.plans["c"].in_place if "c" in prog.plans else {}
            names = sorted(first)
            for i, p in enumerate(names):
                for q in names[i + 1:]:
                    shared = [(o, a) for o, a in ((p, q), (q, p)) if in_place.get(o) == a]
                    if shared and prog.workspace[p] == prog.workspace[q]:
                        o, a = shared[0]
                        assert last[a] <= first[o], (name, o, a)
                        continue
                    if first[p] <= last[q] and first[q] <= last[p]:
                        (p0, p1), (q0, q1) = extent(p), extent(q)
                        assert p1 <= q0 or q1 <= p0, (name, p, q)
        one_each = sum(size_coeffs(prog.vars[n].shape)[0] for n in prog.workspace)
        assert prog.workspace_size[0] <= one_each + 8 * len(prog.workspace), name


# ---- a costly call made once (share_calls) ----------------------------------

def test_share_calls_makes_a_call_two_maps_evaluate_once():
    from bpgen.ir import Graph
    from bpgen.passes.share_calls import share_calls
    g = Graph()
    for n in ("z", "g", "w", "s"):
        g.var(n, ("N", 4))
    z, gz, w = S("z"), S("g"), S("w")
    e = sp.erf(z / sp.sqrt(2))
    # gelu and its derivative share erf(z/√2); tanh(w) and exp(−z²/2) are
    # evaluated by one map each; a map in a loop is left alone
    ops = [emap("a", z * (1 + e) / 2), emap("o", sp.tanh(w)),
           emap("d", gz * ((1 + e) / 2 + z * sp.exp(-z ** 2 / 2))),
           emap("s", sp.erf(z / sp.sqrt(2)) * S("s"), loop=0)]
    for op in ops:
        g.vars.setdefault(op.out, Var(op.out, ("N", 4)))
    out = share_calls(ops, g)
    assert [op.out for op in out] == ["erf_z", "a", "o", "d", "s"]
    u = S("erf_z")
    assert out[0].attrs["expr"] == e and out[0].args == ("z",)
    assert out[1].attrs["expr"] == z * (1 + u) / 2 and out[1].args == ("erf_z", "z")
    assert out[3].attrs["expr"] == gz * ((1 + u) / 2 + z * sp.exp(-z ** 2 / 2))
    assert out[2] is ops[1] and out[4] is ops[3]
    # nothing shared: the program as it was
    assert share_calls(ops[1:3], g) == ops[1:3]
    # the first map that evaluates the call is the call: the others read it
    t = [emap("o", sp.tanh(w)), emap("q", 1 - sp.tanh(w) ** 2)]
    out = share_calls(t, g)
    assert [op.out for op in out] == ["o", "q"] and out[0] is t[0]
    assert out[1].attrs["expr"] == 1 - S("o") ** 2 and out[1].args == ("o",)


COSTLY_ARCHS = ["dense-gelu-bce", "dense-softplus-sce", "dense-silu-bce-l2",
                "block-prenorm-sce-last", "dense-relu-sce-l2", "attn-causal-sce-all"]


@pytest.mark.parametrize("cid", COSTLY_ARCHS)
def test_no_costly_call_is_evaluated_by_two_top_level_maps(cid):
    """After lowering, every costly call (erf, exp, ...) on the same
    variables is made by at most one top-level map of a program; where one
    was shared, a map of its own makes it and the maps that needed it read
    it (gelu's erf: the forward map and its derivative in loss_and_grad)."""
    from bpgen.derivation import derive_all
    from bpgen.passes.share_calls import COSTLY, _calls
    from bpgen.spec import load_spec
    from test_second_order import CASES, F32_CASES
    arch = {**CASES, **F32_CASES}[cid][0]
    derived = derive_all(load_spec(arch))
    made = {}
    for name, prog in derived.programs.items():
        if name == "hessian_columns":       # lowered unplanned: not rewritten
            continue
        seen = {}
        for op in prog.ops:
            for c in _calls(op):
                assert c not in seen, (name, c, seen.get(c), op.out)
                seen[c] = op.out
            expr = op.attrs.get("expr")
            if (op.prim == "map" and op.loop is None and isinstance(expr, COSTLY)
                    and op.out == f"{type(expr).__name__}_{op.args[0]}"):   # one the pass made
                readers = [o.out for o in prog.ops if op.out in o.args]
                assert len(readers) >= 2, (name, op.out, readers)
                made.setdefault(name, []).append(op.out)
    # gelu's erf is shared by its map and its derivative (and, in hvp, its
    # derivative's exp by the tangent and second-derivative maps); nothing
    # is shared in the networks without gelu (softplus' and silu's
    # derivatives are written in their outputs), nor in a forward pass
    gelu = "gelu" in cid or "block" in cid
    assert ("loss_and_grad" in made) == gelu and "forward" not in made, made
    if gelu:
        assert any(n.startswith("erf_") for n in made["loss_and_grad"]), made
        assert any(n.startswith("exp_") for n in made["hvp"]), made


# ---- attention's scores: scales folded, masks in place, the row max ---------

def _attention_like(extra=()):
    """qk = Q[n]·K[n]ᵀ (4 steps, 1 head of 2 columns); s = qk/4;
    sm = causal_mask(s, -∞); m = rowmax(sm); e = exp(sm - m); then the
    backward steps: dsm = e ⊙ g, ds = causal_mask(dsm, 0), dqk = ds/4,
    dq = dqk[n]·K[n], dk = dqk[n]ᵀ·Q[n]; ``extra`` ops appended."""
    sm_attrs = {"steps": 4, "fill": "-inf", "causal": True}
    mm_attrs = {"steps": 4, "heads": 1, "d": 2, "f": 2}
    ops = [Op("seqmm", "qk", ("Q", "K"), {**mm_attrs, "form": "qk"}),
           emap("s", S("qk") / 4),
           Op("causal_mask", "sm", ("s", "M"), sm_attrs),
           Op("rowmax", "m", ("sm",), {}),
           emap("e", sp.exp(S("sm") - S("m"))),
           emap("dsm", S("e") * S("g")),
           Op("causal_mask", "ds", ("dsm", "M"), {**sm_attrs, "fill": "0"}),
           emap("dqk", S("ds") / 4),
           Op("seqmm", "dq", ("dqk", "K"), {**mm_attrs, "form": "av"}),
           Op("seqmm", "dk", ("dqk", "Q"), {**mm_attrs, "form": "atv"}), *extra]
    seq, scores = ("4*N", 2), ("4*N", 4)
    shapes = {"Q": seq, "K": seq, "M": ("4*N", 1), "g": scores, "qk": scores, "s": scores,
              "sm": scores, "m": ("4*N", 1), "e": scores, "dsm": scores, "ds": scores,
              "dqk": scores, "dq": seq, "dk": seq, "o": scores}
    outputs = ["dq", "dk", "e"] + [op.out for op in extra]
    prog = program(ops, ["Q", "K", "M", "g"], outputs, shapes)
    prog.workspace = {op.out: (16 * i, 0) for i, op in enumerate(prog.ops)
                      if op.out not in outputs}
    return prog


def test_scales_fold_into_the_seqmm_products_that_make_or_read_them():
    from bpgen.passes.fold_scale import scale_folds
    assert scale_folds(_attention_like()) == {"into": {"s": ("qk", sp.Rational(1, 4))},
                                              "read_by": {"dqk": ("ds", sp.Rational(1, 4))}}
    # qk read twice, dqk read by a map: neither folds
    both = _attention_like([emap("o", S("qk") + S("dqk"))])
    assert scale_folds(both) == {"into": {}, "read_by": {}}
    # the maps products are added into are left to that pass
    assert scale_folds(_attention_like(), exclude={"s"})["into"] == {}


def test_masks_in_place_with_their_row_max_and_idle_zero_fill_masks():
    from bpgen.passes.allocate import reuse_workspace
    from bpgen.passes.idle_masks import idle_masks
    from bpgen.passes.in_place import c_in_place
    from bpgen.passes.mask_max import mask_maxes
    prog = _attention_like()
    assert c_in_place(prog) == {"sm": "s", "ds": "dsm"}
    assert mask_maxes(prog) == {"m": "sm"}
    # dsm = e ⊙ g, e = exp(sm - m) = 0 where sm is -∞: the mask changes nothing
    assert idle_masks(prog) == {"ds": "dsm"}
    # e + g is not 0 there; nor e ⊙ g under another mask (no key mask M)
    other = _attention_like()
    other.ops[5] = emap("dsm", S("e") + S("g"))
    assert idle_masks(other) == {}
    other = _attention_like()
    other.ops[6] = Op("causal_mask", "ds", ("dsm",), {"steps": 4, "fill": "0", "causal": True})
    assert idle_masks(other) == {}
    ws, _ = reuse_workspace(prog, (), c_in_place(prog))
    assert ws["sm"] == ws["s"] and ws["ds"] == ws["dsm"] and ws["s"] != ws["dsm"]
    # s read after the mask: its own slot
    later = _attention_like([emap("o", S("s") * S("e"))])
    ws, _ = reuse_workspace(later, (), c_in_place(later))
    assert ws["sm"] != ws["s"] and ws["ds"] == ws["dsm"]


def test_c_emitter_prints_the_folded_scales_and_the_masks_in_place():
    from bpgen.lower import _printed_spans
    from bpgen.passes.allocate import reuse_workspace
    prog = optimise(_attention_like(), ("c",))
    plan = prog.plans["c"]
    prog.workspace, prog.workspace_size = reuse_workspace(prog, _printed_spans(prog),
                                                          plan.in_place)
    # the mask and its row max one statement: s read by it alone, sm in its slot
    assert prog.workspace["sm"] == prog.workspace["s"]
    em = CEmitter(prog, "float64", set(), runs=plan.runs, accumulate=plan.accumulate,
                  scales=plan.scales, mask_max=plan.mask_max, idle_masks=plan.idle_masks)
    text = "\n".join(line for b in em.blocks() for line in b["lines"])
    p = PREFIX
    assert "/* qk = Q[n,j]·K[n,j]ᵀ: made scaled, as s, below */" in text
    assert "qk·(1/4) folded into the product */" in text
    assert f"bpg_seqmm_unrolled(0, N, 4, 1, 2, 1, 0, 0, 0.25, {p}Q, {p}K, {p}s);" in text
    assert (f"bpg_causal_mask_max(4*N, 4, N, 1, 1, {p}M, -INFINITY, {p}s, {p}sm, {p}m);"
            in text)
    assert "bpg_rowmax" not in text and f"{p}qk," not in text and f"{p}dqk," not in text
    assert "/* ds = causal_mask(dsm, M, 0) = dsm (in place" in text
    assert "bpg_causal_mask(" not in text
    assert f"bpg_seqmm_unrolled(1, N, 4, 1, 2, 1, 0, 0, 0.25, {p}ds, {p}K, {p}dq);" in text
    assert f"bpg_seqmm_unrolled(2, N, 4, 1, 2, 1, 0, 0, 0.25, {p}ds, {p}Q, {p}dk);" in text
    # without the plan's decisions (bpgen export): each statement as derived
    plain = CEmitter(prog, "float64", set(), runs=plan.runs_alone)
    text = "\n".join(line for b in plain.blocks() for line in b["lines"])
    assert f"bpg_seqmm_unrolled(0, N, 4, 1, 2, 1, 0, 0, 1.0, {p}Q, {p}K, {p}qk);" in text
    assert f"bpg_causal_mask(4*N, 4, N, 1, 1, {p}M, 0, {p}dsm, {p}ds);" in text
