"""``{channels: C, height: H, width: W}``: x is (N, C, H, W), real values;
X holds one sample per row, its C*H*W values in C order."""
from __future__ import annotations

from dataclasses import dataclass

from .base import InputKind, register


@register
@dataclass(frozen=True)
class Image(InputKind):
    kind = "image"
    keys = ("channels", "height", "width")
    form = "{channels: C, height: H, width: W}"

    @classmethod
    def parse(cls, ctx, raw):
        return cls(tuple(ctx.pos_int(raw[k], f"input.{k}") for k in cls.keys))

    def doc_text(self):
        c, h, w = self.shape
        return (f"images of {c} channel(s), {h} by {w} pixels, one row of {c * h * w} values "
                f"per sample: $X$ is $(N \\times {c * h * w})$")
