"""Pass: merge repeated ops (backend-independent, run by :func:`bpgen.lower.lower`).

After fusion two backward maps often compute the same factor; every op that
repeats an earlier one (same primitive, loop, arguments and attributes; not
a state read, not an output) is dropped and its uses renamed to the earlier
op's output."""
from __future__ import annotations

import dataclasses

import sympy as sp

__all__ = ["merge_duplicates"]


def merge_duplicates(ops: list, outputs: list) -> list:
    """``ops`` without the ops that repeat an earlier one (see the module)."""
    kept, seen, rename = [], {}, {}
    for op in ops:
        if rename:
            args = tuple(rename.get(a, a) for a in op.args)
            attrs = op.attrs
            if op.primitive.elementwise:
                expr = op.attrs["expr"].xreplace({sp.Symbol(a): sp.Symbol(b)
                                                  for a, b in rename.items()})
                attrs = {**op.attrs, "expr": expr}
                args = tuple(sorted(set(args)))
            if args != op.args or attrs is not op.attrs:
                op = dataclasses.replace(op, args=args, attrs=attrs)
        if not op.primitive.state_read and op.out not in outputs:
            key = (op.prim, op.loop, op.args,
                   tuple(sorted((k, sp.srepr(v) if isinstance(v, sp.Basic) else repr(v))
                                for k, v in op.attrs.items())))
            if key in seen:
                rename[op.out] = seen[key]
                continue
            seen[key] = op.out
        kept.append(op)
    return kept
