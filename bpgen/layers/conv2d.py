"""``conv2d``: cross-correlation as PyTorch's, in matrix form: the patches
of the (zero-padded) input, one row per output pixel (im2col), times the
kernel as a (filters, C·k·k) matrix, then bias and activation, so the dense
layer's derivation carries over: dW = Δᵀ·P (rank ≤ N·H_out·W_out), and the
input error folds back by the adjoint of im2col (col2im)."""
from __future__ import annotations

from ..activations import activation_expr
from .base import LayerType, ParamSpec, activation_option, register
from .images import image_shape, non_negative, window_output


@register
class Conv2d(LayerType):
    name = "conv2d"
    options = ("filters", "kernel", "stride", "padding", "activation", "alpha")
    required = ("filters", "kernel")

    def check_input(self, ctx, where, in_shape, inp):
        image_shape(ctx, where, self.name, in_shape)

    def validate(self, ctx, raw, where, in_shape, inp):
        c, h, w = image_shape(ctx, where, self.name, in_shape)
        f = ctx.units(raw["filters"], f"{where}.filters")
        k = ctx.pos_int(raw["kernel"], f"{where}.kernel")
        s = ctx.pos_int(raw.get("stride", 1), f"{where}.stride")
        p = non_negative(ctx, raw.get("padding", 0), f"{where}.padding")
        act, alpha = activation_option(ctx, raw, where)
        ho, wo = window_output(ctx, where, "kernel", (h, w), k, s, p)
        if f * c * k * k > 10**8 or ho * wo * c * k * k > 10**8:
            ctx.fail(where, f"a {k}x{k} kernel over {c}x{h}x{w} with {f} filters is too large")
        return ({"filters": f, "kernel": k, "stride": s, "padding": p, "activation": act,
                 "alpha": alpha}, (f, ho, wo),
                (ParamSpec("W", (f, c, k, k), "weight"), ParamSpec("b", (f,), "bias")))

    def forward(self, g, layer, x, p):
        n, s = layer.name, g.sym
        c, h, w = layer.in_shape
        f, ho, wo = layer.out_shape
        k = layer.kernel
        patches = g.gather(x, ("im2col", c, h, w, k, layer.stride, layer.padding), ho * wo,
                           c * k * k, base=f"{n}_P", label=f"P_{n}",
                           comment=f"{n}: patches (im2col), one row per output pixel")
        pw = g.matmul(patches, p["W"], tb=True, base=f"{n}_PW", label=f"PW_{n}",
                      comment=f"{n}: patches times the kernel, P·Wᵀ")
        z = g.map(s(pw) + s(p["b"]), base=f"{n}_Z", label=f"Z_{n}",
                  comment=f"{n}: pre-activation Z = P·Wᵀ + 1·b (pixels x filters)")
        a = g.map(activation_expr(layer.activation, s(z), layer.alpha), base=f"{n}_A",
                  label=f"A_{n}", comment=f"{n}: activation {layer.activation}")
        return g.gather(a, ("transpose", ho * wo, f), 1, f * ho * wo, base=f"{n}_Y",
                        label=f"Maps_{n}", comment=f"{n}: as (N, filters·H_out·W_out), C order")

    def table_entries(self, layer):
        # im2col: (H_out·W_out) x (C·k·k); the transpose: H_out·W_out x filters
        c, k = layer.in_shape[0], layer.kernel
        f, ho, wo = layer.out_shape
        return ho * wo * (c * k * k + f)

    def describe(self, layer):
        return (f"{layer.filters} filters {layer.kernel}x{layer.kernel}, stride "
                f"{layer.stride}, padding {layer.padding}, {layer.activation}")
