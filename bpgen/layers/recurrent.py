"""What the recurrent layer types share: validation and the loop around a
cell's one-step map.  Each cell (``rnn``, ``lstm``, ``gru``) is a layer type
of its own that supplies its parameters and its ``step``; ``birnn`` runs a
cell both ways."""
from __future__ import annotations

from .base import LayerType, ParamSpec, activation_option


class Cell(LayerType):
    """A recurrent cell: h_t = step(x_t·Wx + b, h_(t-1)), h_(-1) = 0."""
    options = ("units",)
    required = ("units",)
    recurrent = True
    gates = 1                 # gate blocks stacked in Wx, Wh (contract order)
    input_bias = "b"          # the bias added to the input projection

    def cell_options(self, ctx, raw, where) -> dict:
        """Options of the cell besides units (the Elman cell's activation)."""
        return {"activation": "tanh", "alpha": None}

    def params(self, fan_in: int, h: int, prefix: str = "") -> tuple:
        g = self.gates * h
        return (ParamSpec(f"{prefix}Wx", (fan_in, g), "weight"),
                ParamSpec(f"{prefix}Wh", (h, g), "recurrent_weight"),
                ParamSpec(f"{prefix}b", (g,), "bias"))

    def validate(self, ctx, raw, where, in_shape, inp):
        return validate_recurrent(self, self, ctx, raw, where, in_shape, inp)

    def forward(self, g, layer, x, p):
        return run_cell(self, g, layer, x, p, "", reverse=False)

    def step(self, g, layer, n: str, xg: str, hp: str, par, block) -> str:
        """The cell's one-step map inside the loop; returns h_t."""
        raise NotImplementedError

    def describe(self, layer):
        return ""


def validate_recurrent(ltype, cell: Cell, ctx, raw, where, in_shape, inp):
    units = ctx.units(raw["units"], f"{where}.units")
    opts = cell.cell_options(ctx, raw, where)
    if not inp.is_sequence or len(in_shape) != 2:
        ctx.fail(where, f"{ltype.name} needs a sequence input ({{features: F, steps: T}}) "
                        f"but gets per-sample shape {in_shape}")
    steps, fan_in = in_shape
    if cell.gates * units * max(fan_in, units) > 10**8:
        ctx.fail(f"{where}.units", f"{units} units make too large a weight matrix")
    if ltype is cell:
        params, out = cell.params(fan_in, units), (steps, units)
    else:     # birnn: the cell twice
        params = cell.params(fan_in, units, "fwd.") + cell.params(fan_in, units, "bwd.")
        out = (steps, 2 * units)
    return {"units": units, "cell": cell.name, **opts}, out, params


def elman_options(ctx, raw, where) -> dict:
    act, alpha = activation_option(ctx, raw, where, "tanh")
    return {"activation": act, "alpha": alpha}


def run_cell(cell: Cell, g, layer, x: str, p: dict, prefix: str, reverse: bool) -> str:
    """One recurrent cell over the whole sequence ``x`` (time-major).

    The input projection x·Wx (+ bias) of every step is one matrix product
    before the loop; the loop body is the cell's one-step map.
    """
    steps = layer.in_shape[0]
    h_units = layer.units
    n = layer.name + (f"_{prefix.rstrip('.')}" if prefix else "")
    s = g.sym

    def par(name):
        return p[prefix + name]

    def block(v, k):
        return s(g.cols(v, k * h_units, (k + 1) * h_units, base=f"{v}_{k}",
                        label=f"{g.vars[v].label}[{k}]"))

    xw = g.matmul(x, par("Wx"), base=f"{n}_XW", label=f"XW_{n}",
                  comment=f"{n}: input projection of every step at once")
    xg = g.map(s(xw) + s(par(cell.input_bias)), base=f"{n}_XG", label=f"XG_{n}",
               comment=f"{n}: input projection plus bias")
    g.loop_begin(steps, reverse=reverse, label=f"{n} ({cell.name})")
    hp = g.state(("N", h_units), base=f"{n}_hprev", label=f"H_{n}(t{'+' if reverse else '-'}1)")
    h = keep(g, cell.step(g, layer, n, xg, hp, par, block), hp)
    g.bind_state(hp, h)
    g.loop_end()
    return h


def keep(g, new: str, prev: str) -> str:
    """A state's value at this step: ``new``, or with a mask (``lengths``)
    in a reversed loop m_t ⊙ new + (1 - m_t) ⊙ prev, so that the padding
    after a sample's last real step, which a reversed loop reads first,
    leaves the state at 0 and the loop starts at the sample's last real
    step.  A loop running forward reads padding only after every real step,
    so it keeps ``new`` (its outputs at padded steps are never read).
    Built with ``map``: its derivatives are derived like any other."""
    if g.mask is None or not g.loops[g.loop].reverse:
        return new
    m = g.sym(g.mask)
    label = g.vars[new].label
    return g.map(m * g.sym(new) + (1 - m) * g.sym(prev), base=f"{new}_kept",
                 label=f"{label}_kept",
                 comment=f"padding keeps the state: m ⊙ {label} + (1 - m) ⊙ previous")
