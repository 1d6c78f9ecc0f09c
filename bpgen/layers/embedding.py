"""``embedding``: token ids (N, T) -> (N, T, F): A = E[X] (+ P[t] at step t
with ``positions``).  Composed from ``take_rows`` (and ``map`` for the sum),
so its gradient, a scatter-add of rows (δE = onehot(X)ᵀ·δA, rank at most
the number of distinct ids; δP = the sum over the samples of each step), and
its second order are derived.  E and P are tables (role ``table``): not
weights for l2."""
from __future__ import annotations

from ..shapes import symbolic
from ..validation import MAX_STEPS
from .base import LayerType, ParamSpec, register


@register
class Embedding(LayerType):
    name = "embedding"
    options = ("units", "positions", "max_steps")
    required = ("units",)
    #: the first layer of a tokens input (bpgen/inputs/tokens.py asks this)
    reads_token_ids = True

    def check_input(self, ctx, where, in_shape, inp):
        if inp.bound is None or tuple(in_shape) != tuple(inp.shape):
            ctx.fail(where, "embedding reads token ids: it must be the first layer, on "
                            "an input {tokens: V, steps: T}")

    def validate(self, ctx, raw, where, in_shape, inp):
        units = ctx.units(raw["units"], f"{where}.units")
        positions = raw.get("positions", False)
        if not isinstance(positions, bool):
            ctx.fail(f"{where}.positions", f"expected true or false, got "
                                           f"{ctx.short(positions)}")
        (steps,), vocab = in_shape, inp.bound
        if vocab * units > 10**8:
            ctx.fail(f"{where}.units", f"table {vocab}x{units} is too large")
        params = (ParamSpec("E", (vocab, units), "table"),)
        options = {"units": units, "positions": positions}
        rows = self.position_rows(ctx, raw, where, steps, positions)
        if positions:
            params += (ParamSpec("P", (rows, units), "table"),)
            if symbolic(steps):
                options["max_steps"] = rows
            if rows * units > 10**8:
                ctx.fail(f"{where}.max_steps", f"table {rows}x{units} is too large")
        return options, (steps, units), params

    def position_rows(self, ctx, raw, where, steps, positions) -> int | None:
        """The rows of the position table P: T, or with ``steps: any`` the
        option ``max_steps`` (T_max: a call with T > T_max is refused).  With
        a fixed T, max_steps may be given only equal to T (P is (T, F))."""
        if "max_steps" not in raw:
            if positions and symbolic(steps):
                ctx.fail(f"{where}.max_steps", "an embedding with positions on an input "
                                               "with steps: any needs max_steps (the rows "
                                               "of its position table P, the largest T "
                                               "a call may have)")
            return steps
        if not positions:
            ctx.fail(f"{where}.max_steps", "max_steps is the rows of the position table: "
                                           "it needs positions: true")
        rows = ctx.pos_int(raw["max_steps"], f"{where}.max_steps", MAX_STEPS,
                           "every step runs once per call")
        if not symbolic(steps) and rows != steps:
            ctx.fail(f"{where}.max_steps", f"{rows} differs from the input's steps {steps}: "
                                           f"with a fixed T, max_steps is T (or absent)")
        return rows

    def forward(self, g, layer, x, p):
        n = layer.name
        a = g.take_rows(p["E"], x, base=f"{n}_EX", label=f"E_{n}[X]",
                        comment=f"{n}: the embedding of each token id")
        if not layer.positions:
            return a
        pos = g.take_rows(p["P"], None, steps=layer.in_shape[0], base=f"{n}_Pt",
                          label=f"P_{n}[t]", comment=f"{n}: the embedding of each step")
        return g.map(g.sym(a) + g.sym(pos), base=f"{n}_A", label=f"A_{n}",
                     comment=f"{n}: token and position embeddings")

    def describe(self, layer):
        return "with positions" if layer.positions else ""
