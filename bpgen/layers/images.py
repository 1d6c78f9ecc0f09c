"""What the image layer types share: the input check and the output size of
a sliding window."""
from __future__ import annotations


def image_shape(ctx, where: str, ltype: str, in_shape: tuple) -> tuple:
    if len(in_shape) != 3:
        ctx.fail(where, f"{ltype} needs an image input ({{channels, height, width}}) but gets "
                        f"per-sample shape {in_shape}")
    return in_shape


def non_negative(ctx, value, where: str) -> int:
    from ..validation import as_int
    number = as_int(value)
    if number is None or number < 0:
        ctx.fail(where, f"expected a non-negative integer, got {ctx.short(value)}")
    value = number
    if value > 10**4:
        ctx.fail(where, f"{ctx.short(value)} is too large (at most 10000: a larger padding "
                        f"only adds zeros)")
    return value


def window_output(ctx, where: str, what: str, size: tuple, k: int, s: int, p: int = 0) -> tuple:
    """(H_out, W_out) of a k x k window with stride s over an H x W map padded by p."""
    h, w = size
    if k > h + 2 * p or k > w + 2 * p:
        padded = f"the padded input {h + 2 * p}x{w + 2 * p}" if p else f"the map {h}x{w}"
        ctx.fail(where, f"{what} {k}x{k} is larger than {padded}")
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
