"""``{features: F}``: x is (N, F), real values; X is x itself."""
from __future__ import annotations

from dataclasses import dataclass

from .base import InputKind, register


@register
@dataclass(frozen=True)
class Features(InputKind):
    kind = "features"
    keys = ("features",)
    form = "{features: F}"

    @classmethod
    def parse(cls, ctx, raw):
        return cls((ctx.pos_int(raw["features"], "input.features"),))

    def doc_text(self):
        f = self.shape[0]
        return f"{f} features per sample: $X$ is $(N \\times {f})$"
