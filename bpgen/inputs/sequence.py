"""``{features: F, steps: T}``: x is (N, T, F), a sequence of T steps of
real values; X holds it time-major, a (T*N, F) matrix whose rows
t*N .. t*N+N-1 are step t (the layout of every sequence in the IR)."""
from __future__ import annotations

from dataclasses import dataclass

from ..shapes import seq_dim, symbolic
from .base import InputKind, register, steps_value


@register
@dataclass(frozen=True)
class Sequence(InputKind):
    kind = "sequence"
    keys = ("features", "steps")
    form = "{features: F, steps: T}"

    @classmethod
    def parse(cls, ctx, raw):
        f = ctx.pos_int(raw["features"], "input.features")
        return cls((steps_value(ctx, raw["steps"]), f))

    @property
    def steps(self):
        return self.shape[0]

    def matrix_shape(self):
        return (seq_dim(self.shape[0]), self.shape[1])

    def doc_text(self):
        t, f = self.shape
        if symbolic(t):
            return (f"a sequence of $T$ steps (read from x at call time) of {f} features, "
                    f"stored time-major as a $(TN \\times {f})$ matrix $X$: rows $tN$ to "
                    f"$tN + N - 1$ are step $t$")
        return (f"a sequence of $T = {t}$ steps of {f} features, stored time-major as a "
                f"$({t}N \\times {f})$ matrix $X$: rows $tN$ to $tN + N - 1$ are step $t$")

