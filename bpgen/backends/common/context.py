"""The values the common templates (header, constants) print, decided here
in Python from the derived programs."""
from __future__ import annotations

import json
import math
import os

from ... import __version__
from ...derivation import Derived
from ...losses import LOSSES
from ...shapes import poly_coeffs, symbolic, upper

__all__ = ["module_context"]


def _printable(name: str) -> str:
    """``name`` as it may appear in a Python docstring and a C comment: no
    quote, backslash, comment delimiter or unprintable character (the spec
    refuses such file names already; this is the second line of defence)."""
    name = "".join(ch if ch.isprintable() and ch not in '"\\' else "_" for ch in name)
    return name.replace("*/", "*_").replace("/*", "_*")


def _bytes_per_sample(derived: Derived) -> int:
    """Bytes one more sample costs a call at most: its input (a copy), and
    the largest outputs plus workspace of any entry point (all linear in N)."""
    itemsize = 4 if derived.spec.dtype == "float32" else 8
    worst = 0
    for name, prog in derived.programs.items():
        per = prog.workspace_size[0] + sum(a for _, _, a, _, _ in derived.layout(name))
        worst = upper(worst, per)
    return 2 * derived.spec.input.x_bytes(derived.spec.dtype) + itemsize * worst


def _assembly_per_sample(derived: Derived) -> dict:
    """Elements per sample an assembly may hold besides its output (every
    per-sample tensor without reuse, the curvature program's outputs and
    workspace): what hessian() checks against the memory limit."""
    if not derived.assemblies:
        return {}
    curv = derived.programs["curvature"]
    base = curv.workspace_size[0] + sum(a for _, _, a, _, _ in derived.layout("curvature"))
    return {name: base + sum(math.prod(t.shape[1:]) for t in asm.tensors.values()
                             if t.shape[0] == "N" and t.kind == "temp")
            for name, asm in derived.assemblies.items()}


def constant(value):
    """A size as a module constant: an int, or with steps: any a polynomial
    in T as its coefficients (c0, c1, ...), lowest first (the runtime's _at)."""
    return poly_coeffs(value) if symbolic(value) else value


def max_steps(spec):
    """With steps: any, the largest T a call may have: the smallest
    max_steps of the embeddings with positions (None: no bound)."""
    if not symbolic(spec.input.steps):
        return None
    rows = [dict(lay.options).get("max_steps") for lay in spec.layers]
    rows = [r for r in rows if r is not None]
    return min(rows) if rows else None


def module_context(derived: Derived, module: str) -> dict:
    spec = derived.spec
    shapes = spec.param_shapes
    seq_out = spec.input.is_sequence and len(spec.output_shape) == 2
    meta = derived.meta
    loss = LOSSES[spec.loss.type]
    return {
        "version": __version__,
        # the file's base name only: output must not depend on the working directory
        "source": _printable(os.path.basename(spec.source)),
        "hash": spec.content_hash(),
        "name": spec.name,
        "module": module,
        "dtype": spec.dtype,
        "param_shapes": [(k, tuple(v)) for k, v in shapes.items()],
        "n_params": sum(math.prod(s) for s in shapes.values()),
        "input_shape": tuple(None if symbolic(d) else d for d in spec.input.shape),
        "input_kind": spec.input.kind,
        "x_dtype": repr(spec.input.x_dtype),
        "x_bound": repr(spec.input.bound),
        "output_units": spec.output_shape[-1],
        "steps": repr("any" if symbolic(spec.input.steps) else spec.input.steps),
        "max_steps": repr(max_steps(spec)),
        "seq_out": repr(seq_out),
        "loss_all_steps": repr(seq_out and spec.loss.steps == "all"),
        "truncate": repr(spec.truncate if spec.input.is_sequence else None),
        "loss_type": spec.loss.type,
        "target_kind": loss.target_kind,
        "target_range": repr(None if loss.target_range is None
                             else tuple(float(b) for b in loss.target_range)),
        "curv_form": loss.curvature_form,
        "spec_json": json.dumps(spec.canonical(), sort_keys=True),
        "arch_hash": spec.architecture_hash(),
        "init": list(spec.init_rules().items()),
        "l2": repr(float(spec.l2)),
        "l2_keys": tuple(spec.l2_keys),
        "factor_index": meta.factor_index,
        "grad_terms": [(pt.key, pt.constant(), pt.reason()) for pt in meta.grad_terms],
        "curv_layers": [cl.constant() for cl in meta.curvature.layers]
        if meta.curvature else [],
        "curv_loss": repr(meta.curvature.loss if meta.curvature else None),
        # entry points with the generic calling convention (inputs, out, ws)
        "outputs": [(name, [tuple(constant(v) for v in p) for p in derived.layout(name)])
                    for name in list(derived.programs) + list(derived.assemblies)
                    if name != "hessian_columns"],
        "bytes_per_sample": constant(_bytes_per_sample(derived)),
        "assembly_per_sample": _assembly_per_sample(derived),
    }
