"""``attention``: multi-head self-attention over a sequence (N, T, F), F = h·d.
Per sample: Q = X·Wq + bq, K = X·Wk + bk, V = X·Wv + bv; for head j
(columns j·d .. j·d+d-1) A_j = softmax over keys of Q_j·K_jᵀ/√d (keys after
the query at -inf when ``causal``; padded keys, at or after the sample's
length, always at -inf); output [A_1·V_1, ..., A_h·V_h]·Wo + bo.

Composed from ``matmul``, ``map``, ``seqmm`` (the per-sample block products
over the steps), ``causal_mask`` (with the key-padding mask ``g.mask``),
``rowmax`` and ``sum`` (the row softmax:
E = exp(S - rowmax(S)), A = E / (E·1)), so its gradient, R-operator and
Hessian are derived: the softmax Jacobian diag(p) - p·pᵀ appears by itself
from the quotient's derivative."""
from __future__ import annotations


import sympy as sp

from .base import AttentionParts, LayerType, ParamSpec, register


@register
class Attention(LayerType):
    name = "attention"
    options = ("heads", "causal")
    required = ("heads",)

    def check_input(self, ctx, where, in_shape, inp):
        if not (inp.is_sequence and len(in_shape) == 2):
            ctx.fail(where, f"attention needs a sequence of features (T, F) but gets "
                            f"per-sample shape {tuple(in_shape)}")

    def validate(self, ctx, raw, where, in_shape, inp):
        heads = ctx.units(raw["heads"], f"{where}.heads")
        causal = raw.get("causal", False)
        if not isinstance(causal, bool):
            ctx.fail(f"{where}.causal", f"expected true or false, got {ctx.short(causal)}")
        f = in_shape[-1]
        if f % heads:
            ctx.fail(f"{where}.heads", f"{heads} heads do not divide the {f} features")
        if f * f > 10**8:
            ctx.fail(where, f"weight matrices {f}x{f} are too large")
        params = tuple(ParamSpec(w, (f, f), "weight") for w in ("Wq", "Wk", "Wv", "Wo"))
        params += tuple(ParamSpec(b, (f,), "bias") for b in ("bq", "bk", "bv", "bo"))
        return {"heads": heads, "causal": causal}, tuple(in_shape), params

    def forward(self, g, layer, x, p):
        n, s = layer.name, g.sym
        t, f = layer.in_shape
        h = layer.heads
        d = f // h
        proj = {}
        words = {"q": "queries", "k": "keys", "v": "values"}
        for part in ("q", "k", "v"):
            big = part.upper()
            xw = g.matmul(x, p[f"W{part}"], base=f"{n}_XW{part}", label=f"XW{part}_{n}",
                          comment=f"{n}: the {words[part]}, the input's projection by "
                                  f"W{part} plus b{part}")
            proj[part] = g.map(s(xw) + s(p[f"b{part}"]), base=f"{n}_{big}",
                               label=f"{big}_{n}")
        scores = g.seqmm(proj["q"], proj["k"], "qk", t, h, base=f"{n}_QK", label=f"QKᵀ_{n}",
                         comment=f"{n}: per sample and head, the queries times the keys transposed")
        scaled = g.map(s(scores) / sp.sqrt(sp.Integer(d)), base=f"{n}_S", label=f"S_{n}",
                       comment=f"{n}: scores / sqrt({d})")
        unmasked = scaled
        if layer.causal or g.mask is not None:
            # keys after the query (causal) and padded keys (g.mask: the
            # sequence's real steps, from lengths) at -inf
            what = " and ".join((["keys after the query"] if layer.causal else [])
                                + (["padded keys"] if g.mask is not None else []))
            scaled = g.causal_mask(scaled, t, keys=g.mask, causal=layer.causal,
                                   base=f"{n}_Sm", label=f"Sm_{n}",
                                   comment=f"{n}: {what} at -inf")
        top = g.rowmax(scaled, base=f"{n}_m", label=f"m_{n}")
        e = g.map(sp.exp(s(scaled) - s(top)), base=f"{n}_E", label=f"E_{n}",
                  comment=f"{n}: softmax over the keys, shifted by the row maximum")
        z = g.sum(e, 1, base=f"{n}_Zs", label=f"Σ_{n}")
        # shape given: with one key (T = 1) the row sum is E itself and E / E
        # folds to the constant 1, which has no argument to take a shape from
        a = g.map(s(e) / s(z), base=f"{n}_P", label=f"P_{n}", shape=g.shape(scaled),
                  comment=f"{n}: attention weights")
        o = g.seqmm(a, proj["v"], "av", t, h, base=f"{n}_AV", label=f"AV_{n}",
                    comment=f"{n}: per sample and head, the weights times the values, heads side by side")
        ow = g.matmul(o, p["Wo"], base=f"{n}_OW", label=f"OWo_{n}",
                      comment=f"{n}: output projection")
        out = g.map(s(ow) + s(p["bo"]), base=f"{n}_A", label=f"A_{n}",
                    comment=f"{n}: plus the output bias")
        # what bpgen show --hessian prints the blocks of Wq .. bo with
        self.attention(g, layer, AttentionParts(
            n, x, proj["q"], proj["k"], proj["v"], unmasked, a, o, out, h, t, f,
            tuple(p[w] for w in ("Wq", "Wk", "Wv", "Wo")),
            tuple(p[b] for b in ("bq", "bk", "bv", "bo"))))
        return out

    def describe(self, layer):
        return f"{layer.heads} heads" + (", causal" if layer.causal else "")


