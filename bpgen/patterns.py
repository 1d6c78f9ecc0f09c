"""Static index patterns of the per-sample gathers that unfold images
(im2col for convolutions, pooling windows) and reorder them.  One function,
used by the generator (the primitives' C tables) and copied verbatim into
NumPy modules (a runtime file, kept beside the primitives rather than under
backends/ so that the primitives import nothing of a backend).

A pattern maps each entry j of one sample's output block to the entry of
that sample's input block it reads (-1: a zero, e.g. the padding)."""
import functools

import numpy

# ---- bpgen runtime: copied verbatim from here ----


@functools.lru_cache(maxsize=None)
def _pattern_index(pattern):
    """int64 index array of ``pattern`` (a tuple: kind, then sizes):

    ("im2col", C, H, W, k, s, p): rows (oh, ow), columns (c, u, v) of the
        patches of a zero-padded C x H x W image, kernel k, stride s, padding p
    ("windows", C, H, W, k, s): rows (c, oh, ow), columns (u, v): pooling windows
    ("transpose", S, F): an S x F block as F x S (pixels x channels -> channels x pixels)
    """
    kind = pattern[0]
    if kind == "im2col":
        c, h, w, k, s, p = pattern[1:]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        oh, ow, ch, u, v = numpy.ix_(numpy.arange(ho), numpy.arange(wo), numpy.arange(c),
                                     numpy.arange(k), numpy.arange(k))
        row, col = oh * s + u - p, ow * s + v - p
        idx = ch * (h * w) + row * w + col
        idx = numpy.where((row >= 0) & (row < h) & (col >= 0) & (col < w), idx, -1)
    elif kind == "windows":
        c, h, w, k, s = pattern[1:]
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        ch, oh, ow, u, v = numpy.ix_(numpy.arange(c), numpy.arange(ho), numpy.arange(wo),
                                     numpy.arange(k), numpy.arange(k))
        idx = ch * (h * w) + (oh * s + u) * w + (ow * s + v)
    elif kind == "transpose":
        s, f = pattern[1:]
        ff, ss = numpy.ix_(numpy.arange(f), numpy.arange(s))
        idx = ss * f + ff
    else:
        raise ValueError(f"unknown index pattern {kind!r}")
    return numpy.ascontiguousarray(idx, dtype=numpy.int64).ravel()
