"""A generated bpgen module inside PyTorch (the optional extra ``torch``).

``bpgen.torch.module(mod)`` is an ``nn.Module`` holding the parameters
(``nn.Parameter``, from ``mod.init_params``) with ``forward(x)`` and
``loss(x, y)``; ``bpgen.torch.loss(mod)(params, x, y)`` is the loss as a
function of a dict of tensors.  Derivatives of the loss come from the module
itself, never from PyTorch tracing its arithmetic:

* four custom operators (``torch.library.custom_op``, namespace ``bpgen``)
  run the module: ``bpgen::loss``, ``bpgen::grad``, ``bpgen::hvp`` and
  ``bpgen::forward``.  Their reverse rules (``register_autograd``) are the
  module's own derivatives: the backward of ``loss`` is ``grad``, the
  backward of ``grad`` is ``hvp`` (the Hessian is symmetric, so the
  vector-Jacobian product of the gradient is a Hessian-vector product), and
  the backward of ``hvp`` in its direction is again ``hvp``; in the
  parameters it would be third order, which is refused.  ``hvp`` batched
  over its direction (``register_vmap``) is the module's ``hmp``: one
  forward and backward pass for all the directions.
* forward mode (``torch.func.jvp``, ``jacfwd`` and so ``torch.func.hessian``)
  is not something a custom operator can carry in PyTorch 2.13, so the loss
  and the gradient are also wrapped in ``torch.autograd.Function``s whose
  ``jvp`` is again the gradient (of the loss) and ``hvp`` (of the gradient),
  and whose ``backward`` calls the operators above.

``forward(x)`` has no derivative: a generated module has no vector-Jacobian
product of its output for an arbitrary cotangent (it differentiates its
loss), so a backward pass through ``forward`` is a ``RuntimeError`` saying
so.  Tensors must be CPU tensors; parameters (and real-valued x and y) of
the module's dtype.  Inputs are handed to the module as ``numpy()`` views
and its results come back through ``torch.from_numpy``: no copies.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy
import torch

from ._modules import ModuleRegistry

__all__ = ["module", "loss", "forward", "BpgenModule"]

#: the modules the custom operators name by a string key (bpgen/_modules.py)
_REGISTRY = ModuleRegistry(("PARAM_SHAPES", "DTYPE", "loss", "loss_and_grad", "hvp", "hmp",
                            "forward"))
_MODULES = _REGISTRY.modules      # key -> module
_KEYS = _REGISTRY.keys            # id(module) -> key
_key = _REGISTRY.key


_TORCH_DTYPES = {numpy.dtype("float64"): torch.float64, numpy.dtype("float32"): torch.float32}


def _torch_dtype(mod):
    return _TORCH_DTYPES[mod.DTYPE]


# ---- checks and conversions ---------------------------------------------

def _on_cpu(t, what):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{what}: bpgen runs on the CPU, got a tensor on {t.device} "
                         f"(move it with .cpu())")
    if t.layout != torch.strided:
        raise ValueError(f"{what}: expected a dense (strided) tensor, got {t.layout}")


def _check_param_list(mod, params, what="params"):
    """``params`` (a mapping keyed like PARAM_SHAPES) as a list of tensors in
    PARAM_SHAPES order, each a CPU tensor of the module's dtype and shape."""
    if not hasattr(params, "keys"):
        raise ValueError(f"{what}: expected a dict of tensors keyed like PARAM_SHAPES, "
                         f"got {type(params).__name__}")
    if len(params) != len(mod.PARAM_SHAPES):
        unknown = [k for k in params.keys() if k not in mod.PARAM_SHAPES]
        if unknown:
            raise ValueError(f"{what}: unknown key {unknown[0]!r} (expected: "
                             f"{', '.join(mod.PARAM_SHAPES)})")
    dtype = _torch_dtype(mod)
    out = []
    for key, shape in mod.PARAM_SHAPES.items():
        t = params.get(key) if hasattr(params, "get") else None
        # the common case in few attribute reads: a CPU tensor of the dtype and shape
        if (isinstance(t, torch.Tensor) and t.is_cpu and t.dtype is dtype
                and t.layout is torch.strided and t.shape == shape):
            out.append(t)
            continue
        if key not in params:
            raise ValueError(f"{what}: missing key {key!r}")
        t = params[key]
        _on_cpu(t, f"{what}[{key!r}]")
        if t.dtype != dtype:
            raise ValueError(f"{what}[{key!r}]: expected {dtype} (the module's dtype), got "
                             f"{t.dtype}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{what}[{key!r}]: expected shape {tuple(shape)}, got "
                             f"{tuple(t.shape)}")
        out.append(t)
    return out


def _check_data(mod, x, y=None, lengths=None):
    """x, y, lengths as tensors on the CPU (values are checked by the module)."""
    dtype = _torch_dtype(mod)
    out = []
    for value, what in ((x, "x"), (y, "y"), (lengths, "lengths")):
        if value is None:
            out.append(None)
            continue
        if (isinstance(value, torch.Tensor) and value.is_cpu and value.layout is torch.strided
                and not value.requires_grad
                and (value.dtype is dtype or not value.dtype.is_floating_point)):
            out.append(value)       # the common case
            continue
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(numpy.asarray(value))
        _on_cpu(value, what)
        if value.dtype.is_floating_point and value.dtype != dtype and not (
                value.dtype == torch.float32 and dtype == torch.float64):
            raise ValueError(f"{what}: expected {dtype} (the module's dtype) or integers, got "
                             f"{value.dtype}")
        if value.requires_grad:
            raise ValueError(f"{what}: bpgen differentiates the loss with respect to the "
                             f"parameters only; {what} requires grad (detach it)")
        out.append(value)
    return out


def _np(t):
    """A NumPy view of a CPU tensor (no copy)."""
    return t.detach().numpy()


def _params_np(mod, params):
    return {key: p.detach().numpy() for key, p in zip(mod.PARAM_SHAPES, params)}


def _lengths(lengths):
    return None if lengths is None else _np(lengths)


def _tensor(arr):
    return torch.from_numpy(numpy.ascontiguousarray(arr))


# ---- the custom operators ------------------------------------------------

_THIRD_ORDER = ("bpgen.torch: third-order derivatives are not supported (the derivative of "
                "the Hessian-vector product with respect to the parameters needs the third "
                "derivative of the loss, which bpgen does not generate)")


def _op_np(mod, tensors):
    """The operators' inputs as NumPy views.  A tensor still wrapped by a
    torch.func transform reaching a kernel means a transform differentiates
    the Hessian-vector product in the parameters: third order."""
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        raise RuntimeError(_THIRD_ORDER)
    return _params_np(mod, tensors)


@torch.library.custom_op("bpgen::loss", mutates_args=())
def _loss_op(key: str, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             lengths: Optional[torch.Tensor]) -> torch.Tensor:
    mod = _MODULES[key]
    value = mod.loss(_op_np(mod, params), _np(x), _np(y), _lengths(lengths))
    return torch.from_numpy(numpy.array(value, dtype=mod.DTYPE))


@torch.library.custom_op("bpgen::grad", mutates_args=())
def _grad_op(key: str, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             lengths: Optional[torch.Tensor]) -> list[torch.Tensor]:
    mod = _MODULES[key]
    _, grads = mod.loss_and_grad(_op_np(mod, params), _np(x), _np(y), _lengths(lengths))
    return [_tensor(grads[k]) for k in mod.PARAM_SHAPES]


@torch.library.custom_op("bpgen::hvp", mutates_args=())
def _hvp_op(key: str, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
            lengths: Optional[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
    mod = _MODULES[key]
    hv = mod.hvp(_op_np(mod, params), _np(x), _np(y), _op_np(mod, v), _lengths(lengths))
    return [_tensor(hv[k]) for k in mod.PARAM_SHAPES]


@torch.library.custom_op("bpgen::forward", mutates_args=())
def _forward_op(key: str, params: list[torch.Tensor], x: torch.Tensor,
                lengths: Optional[torch.Tensor]) -> torch.Tensor:
    mod = _MODULES[key]
    return _tensor(mod.forward(_params_np(mod, params), _np(x), _lengths(lengths)))


@_loss_op.register_fake
def _(key, params, x, y, lengths):
    return params[0].new_empty(()) if params else x.new_empty((), dtype=torch.float64)


@_grad_op.register_fake
def _(key, params, x, y, lengths):
    return [torch.empty_like(p) for p in params]


@_hvp_op.register_fake
def _(key, params, x, y, lengths, v):
    return [torch.empty_like(p) for p in params]


@_forward_op.register_fake
def _(key, params, x, lengths):
    mod = _MODULES[key]
    shape = (x.shape[0],) + ((x.shape[1],) if mod.SEQUENCE_OUTPUT else ()) + (mod.OUTPUT_UNITS,)
    return x.new_empty(shape, dtype=_torch_dtype(mod))


# reverse rules: loss -> grad -> hvp -> hvp (in the direction only)

def _save_inputs(ctx, inputs, output):
    key, params, x, y, lengths, *rest = inputs
    ctx.key, ctx.n = key, len(params)
    ctx.has_lengths = lengths is not None
    ctx.save_for_backward(*params, x, y, *([lengths] if lengths is not None else []))


def _saved(ctx):
    saved = ctx.saved_tensors
    params, x, y = list(saved[:ctx.n]), saved[ctx.n], saved[ctx.n + 1]
    return params, x, y, (saved[ctx.n + 2] if ctx.has_lengths else None)


def _refuse_data_grads(ctx, name):
    if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
        raise RuntimeError(f"bpgen.torch: {name} is differentiated with respect to the "
                           f"parameters only (x and y must not require grad)")


def _loss_backward(ctx, g):
    _refuse_data_grads(ctx, "the loss")
    params, x, y, lengths = _saved(ctx)
    grads = torch.ops.bpgen.grad(ctx.key, params, x, y, lengths)
    return None, [g * gr for gr in grads], None, None, None


def _grad_backward(ctx, cotangents):
    # the vector-Jacobian product of the gradient: H u (H is symmetric)
    _refuse_data_grads(ctx, "the gradient")
    params, x, y, lengths = _saved(ctx)
    return None, torch.ops.bpgen.hvp(ctx.key, params, x, y, lengths, list(cotangents)), \
        None, None, None


def _hvp_backward(ctx, cotangents):
    # d<u, H v>/dv = H u; in the parameters it is a third derivative
    _refuse_data_grads(ctx, "hvp")
    if any(ctx.needs_input_grad[1]):
        raise RuntimeError(_THIRD_ORDER)
    params, x, y, lengths = _saved(ctx)
    return None, [None] * ctx.n, None, None, None, torch.ops.bpgen.hvp(
        ctx.key, params, x, y, lengths, list(cotangents))


def _forward_backward(ctx, g):
    raise RuntimeError("bpgen.torch: forward(x) has no backward pass: a generated module "
                       "differentiates its loss (the generated gradient and Hessian-vector "
                       "product), it has no vector-Jacobian product of its output; "
                       "differentiate loss(x, y) instead")


def _save_forward(ctx, inputs, output):
    pass


_loss_op.register_autograd(_loss_backward, setup_context=_save_inputs)
_grad_op.register_autograd(_grad_backward, setup_context=_save_inputs)
_hvp_op.register_autograd(_hvp_backward, setup_context=_save_inputs)
_forward_op.register_autograd(_forward_backward, setup_context=_save_forward)


# batching rules (torch.vmap, and so torch.func.jacrev / jacfwd / hessian)

def _take(value, dim, b):
    if value is None or dim is None:
        return value
    if isinstance(value, (list, tuple)):
        dims = dim if isinstance(dim, (list, tuple)) else [dim] * len(value)
        return [_take(v, d, b) for v, d in zip(value, dims)]
    return value.select(dim, b)


def _batch_size(args, in_dims):
    for value, dim in zip(args, in_dims):
        if isinstance(value, (list, tuple)) and dim is not None:
            dims = dim if isinstance(dim, (list, tuple)) else [dim] * len(value)
            for v, d in zip(value, dims):
                if d is not None:
                    return v.shape[d]
        elif isinstance(value, torch.Tensor) and dim is not None:
            return value.shape[dim]
    raise AssertionError("no batched input")


def _loop(op, info, in_dims, *args):
    """The generic rule: the operator once per batch element, stacked on dim 0."""
    size = _batch_size(args, in_dims)
    outs = [op(*[_take(a, d, b) for a, d in zip(args, in_dims)]) for b in range(size)]
    if isinstance(outs[0], (list, tuple)):
        return [torch.stack(parts) for parts in zip(*outs)], [0] * len(outs[0])
    return torch.stack(outs), 0


def _no_batch(dim):
    return dim is None or (isinstance(dim, (list, tuple)) and all(d is None for d in dim))


def _hvp_vmap(info, in_dims, key, params, x, y, lengths, v):
    """hvp over a batch of directions alone is hmp: the forward and backward
    pass once, the tangent pass over the columns at once."""
    if not all(_no_batch(d) for d in in_dims[:5]):
        return _loop(torch.ops.bpgen.hvp, info, in_dims, key, params, x, y, lengths, v)
    mod = _MODULES[key]
    dims = in_dims[5] if isinstance(in_dims[5], (list, tuple)) else [in_dims[5]] * len(v)
    size = _batch_size([v], [dims])
    cols = [(t.movedim(d, 0) if d is not None else t.expand(size, *t.shape)).reshape(size, -1)
            for t, d in zip(v, dims)]
    V = torch.cat(cols, dim=1).T if cols else torch.zeros((0, size), dtype=_torch_dtype(mod))
    out = _tensor(mod.hmp(_op_np(mod, params), _np(x), _np(y), _np(V),
                          lengths=_lengths(lengths)).T)
    parts, off = [], 0
    for shape in mod.PARAM_SHAPES.values():
        k = math.prod(shape)
        parts.append(out[:, off:off + k].reshape(size, *shape))
        off += k
    return parts, [0] * len(parts)


torch.library.register_vmap("bpgen::loss", lambda info, dims, *a: _loop(
    torch.ops.bpgen.loss, info, dims, *a))
torch.library.register_vmap("bpgen::grad", lambda info, dims, *a: _loop(
    torch.ops.bpgen.grad, info, dims, *a))
torch.library.register_vmap("bpgen::hvp", _hvp_vmap)
torch.library.register_vmap("bpgen::forward", lambda info, dims, *a: _loop(
    torch.ops.bpgen.forward, info, dims, *a))


# ---- forward mode: the loss and the gradient as autograd.Functions --------

class _Loss(torch.autograd.Function):
    """The loss; reverse mode through ``bpgen::grad``, forward mode
    ⟨grad, t⟩ (both differentiable again: the gradient is :class:`_Grad`)."""

    @staticmethod
    def forward(key, x, y, lengths, *params):
        return torch.ops.bpgen.loss(key, list(params), x, y, lengths)

    @staticmethod
    def setup_context(ctx, inputs, output):
        key, x, y, lengths, *params = inputs
        ctx.key, ctx.data = key, (x, y, lengths)
        ctx.save_for_backward(*params)
        ctx.save_for_forward(*params)

    @staticmethod
    def backward(ctx, g):
        grads = _Grad.apply(ctx.key, *ctx.data, *ctx.saved_tensors)
        return (None, None, None, None, *[g * gr for gr in grads])

    @staticmethod
    def jvp(ctx, _key, _x, _y, _lengths, *tangents):
        grads = _Grad.apply(ctx.key, *ctx.data, *ctx.saved_tensors)
        return sum(((gr * t).sum() for gr, t in zip(grads, tangents) if t is not None),
                   grads[0].new_zeros(()) if grads else torch.zeros(()))

    @staticmethod
    def vmap(info, in_dims, key, x, y, lengths, *params):
        return _loop(lambda *a: _Loss.apply(*a), info, in_dims, key, x, y, lengths, *params)


class _Grad(torch.autograd.Function):
    """The gradient; reverse mode ``bpgen::hvp`` of the cotangent, forward
    mode ``bpgen::hvp`` of the tangent (the Hessian is symmetric)."""

    @staticmethod
    def forward(key, x, y, lengths, *params):
        return tuple(torch.ops.bpgen.grad(key, list(params), x, y, lengths))

    @staticmethod
    def setup_context(ctx, inputs, output):
        key, x, y, lengths, *params = inputs
        ctx.key, ctx.data = key, (x, y, lengths)
        ctx.save_for_backward(*params)
        ctx.save_for_forward(*params)

    @staticmethod
    def backward(ctx, *cotangents):
        params = list(ctx.saved_tensors)
        hv = torch.ops.bpgen.hvp(ctx.key, params, *ctx.data, _zeros_for(cotangents, params))
        return (None, None, None, None, *hv)

    @staticmethod
    def jvp(ctx, _key, _x, _y, _lengths, *tangents):
        params = list(ctx.saved_tensors)
        return tuple(torch.ops.bpgen.hvp(ctx.key, params, *ctx.data,
                                         _zeros_for(tangents, params)))

    @staticmethod
    def vmap(info, in_dims, key, x, y, lengths, *params):
        out, dims = _loop(lambda *a: list(_Grad.apply(*a)), info, in_dims, key, x, y, lengths,
                          *params)
        return tuple(out), tuple(dims)


class _EagerLoss(torch.autograd.Function):
    """The loss in plain eager autograd (no torch.func transform active: the
    only difference is speed).  The module is called directly, without the
    custom operator's dispatch; a backward without ``create_graph`` calls
    ``loss_and_grad`` directly too, one with it goes through :class:`_Grad`
    (differentiable: its backward is ``bpgen::hvp``)."""

    @staticmethod
    def forward(ctx, key, x, y, lengths, *params):
        mod = _MODULES[key]
        ctx.key, ctx.data = key, (x, y, lengths)
        ctx.save_for_backward(*params)
        # the NumPy views, kept for a backward without create_graph
        ctx.arrays = (_params_np(mod, params), _np(x), _np(y), _lengths(lengths))
        return torch.from_numpy(numpy.array(mod.loss(*ctx.arrays), dtype=mod.DTYPE))

    @staticmethod
    def backward(ctx, g):
        params = ctx.saved_tensors
        if torch.is_grad_enabled():         # create_graph: differentiable again
            grads = _Grad.apply(ctx.key, *ctx.data, *params)
            return (None, None, None, None, *[g * gr for gr in grads])
        mod = _MODULES[ctx.key]
        _, grads = mod.loss_and_grad(*ctx.arrays)
        grads = [torch.from_numpy(grads[k]) for k in mod.PARAM_SHAPES]
        try:
            one = g.item() == 1.0           # loss.backward() passes 1: no product
        except RuntimeError:                # a batched cotangent (is_grads_batched)
            one = False
        if not one:
            grads = [g * gr for gr in grads]
        return (None, None, None, None, *grads)


def _apply_loss(key, x, y, lengths, mats):
    if torch._C._are_functorch_transforms_active():
        return _Loss.apply(key, x, y, lengths, *mats)
    return _EagerLoss.apply(key, x, y, lengths, *mats)


def _zeros_for(values, like):
    return [torch.zeros_like(p) if v is None else v for v, p in zip(values, like)]


# ---- the public functions -------------------------------------------------

def loss(mod):
    """``f(params, x, y, lengths=None)``: the loss of ``mod`` as a 0-d tensor,
    ``params`` a dict of tensors keyed like ``mod.PARAM_SHAPES`` (CPU, the
    module's dtype).  Differentiable in the parameters to second order, in
    reverse and forward mode (``torch.autograd.grad``, ``torch.func.grad``,
    ``torch.func.hessian``, ``torch.autograd.functional.hessian``, ...)."""
    key = _key(mod)

    def f(params, x, y, lengths=None):
        mats = _check_param_list(mod, params)
        x, y, lengths = _check_data(mod, x, y, lengths)
        return _apply_loss(key, x, y, lengths, mats)
    f.__name__ = f.__qualname__ = f"loss_{getattr(mod, '__name__', 'module')}"
    return f


def forward(mod):
    """``f(params, x, lengths=None)``: the network's output (no backward pass:
    see the module docstring)."""
    key = _key(mod)

    def f(params, x, lengths=None):
        mats = _check_param_list(mod, params)
        x, _, lengths = _check_data(mod, x, None, lengths)
        return torch.ops.bpgen.forward(key, mats, x, lengths)
    return f


class _Group(torch.nn.Module):
    """A level of the parameter keys ("l0" of "l0.W")."""


class BpgenModule(torch.nn.Module):
    """A generated module as an ``nn.Module``: its parameters are
    ``nn.Parameter``s named exactly like ``PARAM_SHAPES`` (``l0.W`` is the
    attribute ``W`` of the submodule ``l0``, so ``state_dict()`` keys are the
    bpgen keys)."""

    def __init__(self, mod, seed=0):
        super().__init__()
        self._key = _key(mod)
        object.__setattr__(self, "bpgen_module", mod)     # not a submodule
        init = mod.init_params(seed)
        slots = []      # (key, the submodule holding it, its name there)
        for key in mod.PARAM_SHAPES:
            *path, name = key.split(".")
            owner = self
            for part in path:
                child = owner._modules.get(part)
                if child is None:
                    child = _Group()
                    try:
                        owner.add_module(part, child)
                    except KeyError:
                        raise ValueError(f"mod: layer name {part!r} (in {key!r}) is an "
                                         f"attribute of torch.nn.Module; rename the layer "
                                         f"to use bpgen.torch.module") from None
                owner = child
            try:
                owner.register_parameter(name, torch.nn.Parameter(torch.from_numpy(init[key])))
            except KeyError:
                raise ValueError(f"mod: parameter {key!r} clashes with an attribute of "
                                 f"torch.nn.Module; rename the layer") from None
            slots.append((key, owner, name))
        object.__setattr__(self, "_slots", tuple(slots))

    def params(self):
        """The parameters as a dict keyed like ``PARAM_SHAPES``."""
        return {key: owner._parameters[name] for key, owner, name in self._slots}

    def forward(self, x, lengths=None):
        """The network's output (no backward pass through it)."""
        mod = self.bpgen_module
        mats = _check_param_list(mod, self.params())
        x, _, lengths = _check_data(mod, x, None, lengths)
        return torch.ops.bpgen.forward(self._key, mats, x, lengths)

    def loss(self, x, y, lengths=None):
        """The loss, differentiable in the parameters (to second order)."""
        mod = self.bpgen_module
        mats = _check_param_list(mod, self.params())
        x, y, lengths = _check_data(mod, x, y, lengths)
        return _apply_loss(self._key, x, y, lengths, mats)

    def extra_repr(self):
        mod = self.bpgen_module
        return f"{getattr(mod, '__name__', 'module')}: {mod.N_PARAMS} parameters, {mod.DTYPE}"


def module(mod, seed=0):
    """``mod`` (a generated module) as an ``nn.Module`` whose parameters are
    initialised by ``mod.init_params(seed)``."""
    _key(mod)
    return BpgenModule(mod, seed)
