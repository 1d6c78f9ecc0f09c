"""``{tokens: V, steps: T}``: x is (N, T), a sequence of T token ids, each an
integer in [0, V); any integer dtype is accepted, floats are refused (a
``ValueError`` naming x, in Python and in the C entry points).  X holds it
time-major, a (T*N, 1) matrix of int64 whose row t*N + n is sample n's id at
step t (the layout of every sequence in the IR).  The first layer reading it
is an ``embedding`` (a layer type with ``reads_token_ids``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..shapes import seq_dim, symbolic
from .base import InputKind, register, steps_value


@register
@dataclass(frozen=True)
class Tokens(InputKind):
    vocabulary: int = 1
    kind = "tokens"
    keys = ("tokens", "steps")
    form = "{tokens: V, steps: T}"
    x_dtype = "int64"

    @classmethod
    def parse(cls, ctx, raw):
        v = ctx.pos_int(raw["tokens"], "input.tokens")
        return cls((steps_value(ctx, raw["steps"]),), v)

    @property
    def steps(self):
        return self.shape[0]

    @property
    def bound(self):
        return self.vocabulary

    def matrix_shape(self):
        return (seq_dim(self.shape[0]), 1)

    def check_layer(self, ctx, where, index, ltype):
        reads = getattr(ltype, "reads_token_ids", False)
        if index == 0 and not reads:
            ctx.fail(where, f"{ltype.name} cannot read token ids; the first layer of a "
                            f"tokens input is an embedding")

    def canonical(self):
        return dict(super().canonical(), vocabulary=self.vocabulary)

    def describe(self):
        return f"tokens input ({self.shape[0]},) of {self.vocabulary} ids"

    def sample(self, rng, n, dtype, steps=5):
        return rng.integers(0, self.vocabulary, size=(n,) + self.concrete_shape(steps))

    def doc_text(self):
        t, v = self.shape[0], self.vocabulary
        if symbolic(t):
            return (f"a sequence of $T$ token ids (T read from x at call time) in $[0, {v})$, "
                    f"stored time-major as a $(TN \\times 1)$ integer matrix $X$: row "
                    f"$tN + n$ is sample $n$'s id at step $t$")
        return (f"a sequence of $T = {t}$ token ids in $[0, {v})$, stored time-major as a "
                f"$({t}N \\times 1)$ integer matrix $X$: row $tN + n$ is sample $n$'s id "
                f"at step $t$")
