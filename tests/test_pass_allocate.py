"""bpgen/passes/allocate.py: first-fit placement by liveness, and the
per-direction workspace of a list of ops (hessian_columns' tangent part)."""
import dataclasses

from bpgen.ir import Op, Var
from bpgen.lower import Program
from bpgen.passes.allocate import allocate, first_fit


def test_first_fit_reuses_dead_memory():
    size = {"a": 4, "b": 2, "c": 3, "d": 2}
    first = {"a": 0, "b": 1, "c": 2, "d": 3}
    last = {"a": 1, "b": 3, "c": 4, "d": 4}
    offsets, total = first_fit(["a", "b", "c", "d"], size, first, last)
    # a dies at op 1: c (from op 2) takes its place below b; d fits nowhere
    # below: b (live until 3) and c (live) hold 0..6
    assert offsets == {"a": 0, "b": 4, "c": 0, "d": 6}
    assert total == 8
    # nothing overlaps while both live
    for x in size:
        for y in size:
            if x < y and not (last[x] < first[y] or last[y] < first[x]):
                assert (offsets[x] + size[x] <= offsets[y]
                        or offsets[y] + size[y] <= offsets[x]), (x, y)


def _program(ops, shapes, loops=None, step_vars=()):
    vars_ = {n: Var(n, s) for n, s in shapes.items()}
    return Program("p", ["x"], [], ops, vars_, {}, {}, (0, 0), loops or {}, set(step_vars))


def test_allocate_per_sample_fixed_loops_and_whole():
    shapes = {"x": ("N", 3), "v": (3, 2), "a": ("N", 2), "b": ("N", 2), "c": (3, 2),
              "s": ("2*N", 2), "u": ("N", 2), "out": (3, 2)}
    op = lambda out, *args, loop=None: Op("map", out, args, {}, loop=loop)  # noqa: E731
    ops = [op("a", "x", "v"),          # 0
           op("b", "a"),               # 1: a dies here
           op("s", "b", loop=0),       # 2 .. 3: a loop, s lives for all of it
           op("u", "s", loop=0),
           op("c", "u"),               # 4
           op("out", "c", "v")]        # 5
    prog = _program(ops, shapes, {0: {"steps": 2, "seq": "2*N"}})
    names = {"v", "a", "b", "s", "u", "c", "out"}
    offsets, (pa, pb) = allocate(prog, ops, names, whole={"v", "out"})
    # per-sample ones at a*N: a dies at op 1, so u (from the loop's first op)
    # takes its room; b is read in the loop, so it lives through the loop,
    # and s (4 per sample: two steps of 2) goes after it.  Fixed-size ones
    # at b: v and out live throughout, c after them
    assert offsets == {"a": (0, 0), "b": (2, 0), "s": (4, 0), "u": (0, 0),
                       "out": (0, 0), "v": (0, 6), "c": (0, 12)}
    assert (pa, pb) == (8, 18)
    # a variable kept one step at a time takes one step's room
    prog1 = dataclasses.replace(prog, step_vars={"s"})
    offsets1, (pa1, _) = allocate(prog1, ops, names, whole={"v", "out"})
    assert pa1 <= pa
