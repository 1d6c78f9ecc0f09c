"""Deriving the structured Hessian's assembly for one architecture.

From the curvature program's outputs (per layer: its input a, f'(z),
f''(z), δa, δz; the loss curvature) and the parameters, the ops of
:mod:`bpgen.assembly` compose:

* Λ_out (the loss), then Λ_k for every layer, last to first (the backward
  recursion Λ_k = D_k·W_(k+1)·Λ_(k+1)·W_(k+1)ᵀ·D_k + diag(f''(z_k) ⊙ δa_k));
* for every pair of layers k <= l the block H[(W_k, b_k), (W_l, b_l)]: a
  Kronecker sum over samples with Λ_kl = ∂z_l/∂z_k·Λ_l, plus for k < l the
  commutation-type term through J_(k→l) = ∂a_(l-1)/∂z_k; each off-diagonal
  block mirrored (each diagonal block is exactly symmetric as written); then
  λ I from l2.

``mode="blocks"`` keeps only the diagonal blocks, each its own output.
Nothing here is specific to a backend: the ops print themselves.
"""
from __future__ import annotations

import math

from ..equations import tex_label, tex_roman
from ..losses import LOSSES
from ..spec import Spec
from .base import Assembly, Tensor

__all__ = ["derive_assembly"]

#: entries of the tiles a diagonal Kronecker block computes at once in C
#: (32,768 doubles: 256 KiB, in L2 while they are written twice)
_TILE_CHUNK = 32768


def _t(name, shape, text, kind="temp", tex=None):
    return Tensor(name, tuple(shape), text, tex if tex is not None else tex_label(text), kind)


def derive_assembly(spec: Spec, curv, meta, mode: str = "full") -> Assembly:
    """The assembly of the full Hessian (``mode="full"``: one output H,
    N_PARAMS x N_PARAMS) or of every layer's diagonal block (``"blocks"``:
    one output per layer) from the curvature program ``curv`` and its
    layout ``meta.curvature`` (a :class:`~bpgen.meta.CurvatureLayout`: the
    parameter keys of each layer by role, never by name or position)."""
    from . import ops as o     # noqa: F401  (the op classes, registered)
    if mode not in ("full", "blocks"):
        raise ValueError(f"mode: expected 'full' or 'blocks', got {mode!r}")
    shapes = spec.param_shapes
    offset, off = {}, 0
    for key, shape in shapes.items():
        offset[key] = off
        off += math.prod(shape)
    n_params = off
    param_var = dict(zip(shapes, curv.inputs[2:]))
    tensors = {}
    for var in curv.outputs:
        tensors[var] = _t(var, curv.vars[var].shape, curv.vars[var].label, "input")
    layout = meta.curvature
    layers = []
    for i, cl in enumerate(layout.layers):
        wk, bk, name = cl.weight_key, cl.bias_key, cl.name
        if offset[bk] != offset[wk] + math.prod(shapes[wk]) or len(shapes[bk]) != 1:
            raise AssertionError(f"{wk}, {bk}: the bias does not follow its weight")
        for key, shape in ((wk, shapes[wk]), (bk, (1, shapes[bk][0]))):
            var = param_var[key]
            tensors[var] = _t(var, shape, curv.vars[var].label, "param")
        p, c = shapes[wk]
        layers.append({"i": i, "name": name, "keys": f"{wk}, {bk}", "w": param_var[wk],
                       "off": offset[wk], "size": (p + 1) * c, "p": p, "c": c,
                       "a": curv.outputs[cl.input], "d1": curv.outputs[cl.d1],
                       "d2": curv.outputs[cl.d2], "q": curv.outputs[cl.q],
                       "delta": curv.outputs[cl.delta], "wkey": wk})

    ops = []
    loss_src = curv.outputs[layout.loss]
    k_out = tensors[loss_src].shape[1]
    tensors["lam_out"] = _t("lam_out", ("N", k_out, k_out), "Λ_out", tex=r"\Lambda_{\mathrm{out}}")
    ops.append(o.LossCurvature("lam_out", loss_src, LOSSES[spec.loss.type].curvature_form))
    nxt = "lam_out"
    for k in range(len(layers) - 1, -1, -1):
        lay = layers[k]
        out, tmp = f"lam_{k}", f"T_{k}"
        tensors[out] = _t(out, ("N", lay["c"], lay["c"]), f"Λ_{lay['name']}",
                          tex=rf"\Lambda_{{{tex_roman(lay['name'])}}}")
        w = layers[k + 1]["w"] if k + 1 < len(layers) else None
        v = tensors[nxt].shape[1]
        tensors[tmp] = _t(tmp, ("N", 2 * lay["c"], v), f"T_{lay['name']}",
                          tex=rf"T_{{{tex_roman(lay['name'])}}}")
        ops.append(o.Sandwich(out, nxt, w, lay["d1"], lay["d2"], lay["q"], tmp))
        nxt = out
    for k, lay in enumerate(layers):
        tensors[f"a1_{k}"] = _t(f"a1_{k}", ("N", lay["p"] + 1), "ã_" + lay["name"],
                                tex=rf"\tilde{{a}}_{{{tex_roman(lay['name'])}}}")
        ops.append(o.AppendOnes(f"a1_{k}", lay["a"]))

    outputs = []
    if mode == "full":
        tensors["H"] = _t("H", (n_params, n_params), "H", "output")
        outputs.append(("H", n_params, n_params))
    for k, lay in enumerate(layers):
        if mode == "full":
            h, ld, r0 = "H", n_params, lay["off"]
        else:
            h, ld, r0 = f"H_{k}", lay["size"], 0
            tensors[h] = _t(h, (ld, ld), f"H_{lay['name']}", "output",
                            tex=rf"H_{{{tex_roman(lay['name'])}}}")
            outputs.append((h, ld, ld))
        tmp, wtmp, gtmp = f"R_{k}_{k}", f"W_{k}", f"G_{k}"
        c, pairs = lay["c"], (lay["p"] + 1) * (lay["p"] + 2) // 2
        pc = max(1, min(pairs, _TILE_CHUNK // (c * c)))
        tensors[tmp] = _t(tmp, ("N", (lay["p"] + 1) * c), "R")
        tensors[wtmp] = _t(wtmp, ("N", pc), "W")
        tensors[gtmp] = _t(gtmp, (pc * c * c,), "G")
        ops.append(o.KronBlock(h, ld, r0, r0, f"a1_{k}", f"a1_{k}", f"lam_{k}", None, None,
                               tmp, lay["keys"], lay["keys"], wtmp, gtmp, pc))
        if mode == "blocks":
            _l2(spec, ops, h, r0 - lay["off"], offset, [lay["wkey"]])
            continue
        for m in range(k + 1, len(layers)):
            lm, prev = layers[m], layers[m - 1]
            j, z, mm, tmp = f"J_{k}_{m}", f"Z_{k}_{m}", f"M_{k}_{m}", f"R_{k}_{m}"
            pair = f"{lay['name']}→{lm['name']}"
            pair_tex = rf"{tex_roman(lay['name'])} \to {tex_roman(lm['name'])}"
            tensors[j] = _t(j, ("N", lay["c"], lm["p"]), f"J_{pair}", tex=f"J_{{{pair_tex}}}")
            tensors[z] = _t(z, ("N", lay["c"], lm["c"]), f"Z_{pair}", tex=f"Z_{{{pair_tex}}}")
            tensors[mm] = _t(mm, ("N", lay["c"], lm["c"]), f"Λ_{lay['name']},{lm['name']}",
                             tex=rf"\Lambda_{{{tex_roman(lay['name'])},{tex_roman(lm['name'])}}}")
            tensors[tmp] = _t(tmp, ("N", (lm["p"] + 1) * lm["c"]), "R")
            if m == k + 1:
                ops.append(o.ChainStart(j, lay["d1"]))
            else:
                ops.append(o.ScaleColumns(j, f"Z_{k}_{m - 1}", prev["d1"]))
            ops.append(o.SharedProduct(z, j, lm["w"]))
            ops.append(o.SampleProduct(mm, z, f"lam_{m}"))
            ops.append(o.KronBlock(h, ld, lay["off"], lm["off"], f"a1_{k}", f"a1_{m}", mm, j,
                                   lm["delta"], tmp, lay["keys"], lm["keys"]))
            ops.append(o.Mirror(h, lay["off"], lm["off"], lay["size"], lm["size"],
                                lay["keys"], lm["keys"]))
    if mode == "full":
        _l2(spec, ops, "H", 0, offset, [lay["wkey"] for lay in layers])
    asm = Assembly("hessian" if mode == "full" else "hessian_blocks", list(curv.inputs),
                   list(curv.outputs), tensors, ops, outputs)
    # graph variables always carry a non-numeric suffix after a layer name
    # (l0_XW, l0_d1, ...), so the names made here (lam_0, T_0, ...) cannot clash
    clash = {n for n, t in tensors.items() if t.kind in ("temp", "output")} & (
        set(curv.vars) | set(curv.inputs))
    if clash:
        raise AssertionError(f"assembly names clash with the curvature's: {sorted(clash)}")
    for op in ops:
        op.check(asm)
    return asm


def _l2(spec, ops, h, shift, offset, keys):
    from .symmetry import AddL2
    if not spec.l2:
        return
    l2_keys = set(spec.l2_keys)
    for key in keys:
        if key in l2_keys:
            start = offset[key] + shift
            ops.append(AddL2(h, start, start + math.prod(spec.param_shapes[key]),
                             float(spec.l2), key))
