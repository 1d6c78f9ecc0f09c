"""A generated bpgen module inside JAX (the optional extra ``jax``).

``bpgen.jax.loss(mod)(params, x, y, lengths=None)`` is the module's loss as
a JAX function of a dict of arrays keyed like ``mod.PARAM_SHAPES``, which
``jax.grad``, ``jax.jit``, ``jax.jvp``, ``jax.vmap`` and ``jax.hessian``
(forward over reverse) as well as reverse over reverse differentiate to
second order with the module's own derivatives:

* the loss is a ``jax.custom_jvp`` function (its value through
  ``jax.pure_callback``) whose tangent rule is ⟨g, t⟩, g the generated
  gradient;
* the gradient is again a ``custom_jvp`` function (``pure_callback`` of
  ``loss_and_grad``) whose tangent rule is the generated Hessian-vector
  product H t;
* that product is a JAX primitive, ``bpgen_hvp``, linear in its direction:
  its transpose is itself (the Hessian is symmetric), which reverse mode
  needs (a ``pure_callback`` has no transpose), its batching rule over
  directions is the module's ``hmp`` (one forward and backward pass for all
  directions; other batches map over the batch), and its lowering is a
  ``pure_callback``.  Its derivative in the parameters would be third
  order, which bpgen does not generate: refused with a ``NotImplementedError``.

The callbacks use ``vmap_method="sequential"``: the module's functions take
one parameter set, so a batch runs them once per element (and the batch of
directions goes to ``hmp`` by the primitive's own rule).  They receive the
parameters (and directions) as one flat vector in the module's flat order,
concatenated in XLA: each operand of a ``pure_callback`` has a cost of its
own.  ``loss``, ``grad`` and ``hvp`` return jitted functions.  x and y are data:
differentiating with respect to them is an error.  A float64 module needs
``jax.config.update("jax_enable_x64", True)`` (JAX's arrays are float32
otherwise); parameters must have the module's dtype.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from ._modules import ModuleRegistry

__all__ = ["loss", "grad", "hvp"]

#: the modules the operators name by a string key (bpgen/_modules.py)
_REGISTRY = ModuleRegistry(("PARAM_SHAPES", "DTYPE", "loss", "loss_and_grad", "hvp", "hmp"))
_MODULES = _REGISTRY.modules      # key -> module
_KEYS = _REGISTRY.keys            # id(module) -> key
_key = _REGISTRY.key


def _flat(mod, mats):
    """The parameter arrays as one vector in the flat order (in XLA: one
    operand for the callback instead of one per parameter, each costing)."""
    if not mats:
        return jnp.zeros((0,), mod.DTYPE)
    return jnp.concatenate([jnp.ravel(m) for m in mats])


def _split_flat(mod, flat, lead=()):
    """The inverse of :func:`_flat` (``lead``: leading batch axes of ``flat``)."""
    out, off = [], 0
    for shape in mod.PARAM_SHAPES.values():
        k = math.prod(shape)
        out.append(flat[..., off:off + k].reshape(*lead, *shape))
        off += k
    return out


def _views(mod, flat):
    """A flat NumPy vector as a dict of views keyed like PARAM_SHAPES (no copy)."""
    flat = numpy.asarray(flat)
    return {key: flat[a:b].reshape(shape) for key, (a, b, shape) in _offsets(mod).items()}


@functools.lru_cache(maxsize=None)
def _offsets_of(key):
    mod, out, off = _MODULES[key], {}, 0
    for name, shape in mod.PARAM_SHAPES.items():
        k = math.prod(shape)
        out[name] = (off, off + k, tuple(shape))
        off += k
    return out


def _offsets(mod):
    return _offsets_of(_KEYS[id(mod)])


def _flat_np(mod, d):
    """A dict of arrays as one flat vector of the module's dtype."""
    parts = [numpy.ravel(d[k]) for k in mod.PARAM_SHAPES]
    return numpy.concatenate(parts) if parts else numpy.zeros(0, mod.DTYPE)


def _lengths_of(rest):
    return numpy.asarray(rest[0]) if rest else None


# ---- the callbacks: NumPy in, NumPy out (the parameters as one vector) ------

def _np_loss(key, x, y, flat, *rest):
    mod = _MODULES[key]
    value = mod.loss(_views(mod, flat), numpy.asarray(x), numpy.asarray(y), _lengths_of(rest))
    return numpy.asarray(value, dtype=mod.DTYPE)


def _np_grad(key, x, y, flat, *rest):
    mod = _MODULES[key]
    _, grads = mod.loss_and_grad(_views(mod, flat), numpy.asarray(x), numpy.asarray(y),
                                 _lengths_of(rest))
    return _flat_np(mod, grads)


def _np_hvp(key, x, y, flat, v, *rest):
    mod = _MODULES[key]
    hv = mod.hvp(_views(mod, flat), numpy.asarray(x), numpy.asarray(y), _views(mod, v),
                 _lengths_of(rest))
    return _flat_np(mod, hv)


def _np_hmp(key, x, y, flat, V, *rest):
    """H V for the rows of V (a batch of flat directions): hmp, rows out."""
    mod = _MODULES[key]
    V = numpy.asarray(V)
    return numpy.ascontiguousarray(
        mod.hmp(_views(mod, flat), numpy.asarray(x), numpy.asarray(y), V.T,
                _lengths_of(rest)).T)


# ---- the hvp primitive: linear in v, its own transpose ---------------------

hvp_p = Primitive("bpgen_hvp")
#: the batch dimension of an operand vmap does not map (None in recent JAX)
_NOT_MAPPED = getattr(batching, "not_mapped", None)
hvp_p.multiple_results = True


_THIRD_ORDER = ("bpgen.jax: third-order derivatives are not supported (the derivative of the "
                "Hessian-vector product with respect to the parameters, or to x or y, needs "
                "the third derivative of the loss, which bpgen does not generate)")


def _split(args, n, has_lengths):
    """(params, x, y, lengths or None, v) of the primitive's operands."""
    params, x, y = args[:n], args[n], args[n + 1]
    rest = args[n + 2:]
    lengths, v = (rest[0], rest[1:]) if has_lengths else (None, rest)
    return list(params), x, y, lengths, list(v)


def _bind(key, params, x, y, lengths, v):
    return hvp_p.bind(*params, x, y, *([lengths] if lengths is not None else []), *v,
                      key=key, n=len(params), has_lengths=lengths is not None)


def _hvp_impl(*args, key, n, has_lengths):
    mod = _MODULES[key]
    params, x, y, lengths, v = _split(args, n, has_lengths)
    out = jax.pure_callback(functools.partial(_np_hvp, key),
                            jax.ShapeDtypeStruct((mod.N_PARAMS,), mod.DTYPE), x, y,
                            _flat(mod, params), _flat(mod, v),
                            *([lengths] if has_lengths else []), vmap_method="sequential")
    return _split_flat(mod, out)


def _hvp_abstract(*args, key, n, has_lengths):
    mod = _MODULES[key]
    return [jax.core.ShapedArray(tuple(s), mod.DTYPE) for s in mod.PARAM_SHAPES.values()]


def _hvp_jvp(primals, tangents, *, key, n, has_lengths):
    params, x, y, lengths, v = _split(primals, n, has_lengths)
    tparams, tx, ty, _, tv = _split(tangents, n, has_lengths)
    if any(type(t) is not ad.Zero for t in (*tparams, tx, ty)):
        raise NotImplementedError(_THIRD_ORDER)
    out = _bind(key, params, x, y, lengths, v)
    tv = [ad.instantiate_zeros(t) for t in tv]
    return out, _bind(key, params, x, y, lengths, tv)


def _hvp_transpose(cts, *args, key, n, has_lengths):
    """⟨ct, H v⟩ = ⟨H ct, v⟩: the transpose in v is hvp of the cotangent."""
    params, x, y, lengths, v = _split(args, n, has_lengths)
    if any(ad.is_undefined_primal(a) for a in (*params, x, y)):
        raise NotImplementedError("bpgen.jax: hvp is linear in its direction only")
    cts = [ad.instantiate_zeros(c) if type(c) is ad.Zero else c for c in cts]
    hv = _bind(key, params, x, y, lengths, cts)
    return [None] * (n + 2 + has_lengths) + list(hv)


def _hvp_batch(batched, dims, *, key, n, has_lengths):
    params, x, y, lengths, v = _split(list(batched), n, has_lengths)
    pdims, xd, yd, ld, vdims = _split(list(dims), n, has_lengths)
    size = next(a.shape[d] for a, d in zip(batched, dims) if d is not _NOT_MAPPED)
    if all(d is _NOT_MAPPED for d in (*pdims, xd, yd, ld)):
        # a batch of directions alone: hmp (one forward and backward pass)
        v = [jnp.moveaxis(a, d, 0) if d is not _NOT_MAPPED
             else jnp.broadcast_to(a, (size, *a.shape)) for a, d in zip(v, vdims)]
        out = _hmp(key, has_lengths, size, params, x, y, lengths, v)
        return list(out), [0] * len(out)
    # anything else batched: one hvp per element
    moved = [jnp.moveaxis(a, d, 0) if d is not _NOT_MAPPED
             else jnp.broadcast_to(a, (size, *jnp.shape(a))) for a, d in zip(batched, dims)]
    out = jax.lax.map(lambda ops: hvp_p.bind(*ops, key=key, n=n, has_lengths=has_lengths),
                      moved)
    return list(out), [0] * len(out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _hmp(key, has_lengths, size, params, x, y, lengths, v):
    """hvp over a batch of directions (axis 0 of every v): the module's hmp.
    Its tangent in v is again hmp; in anything else it is third order."""
    mod = _MODULES[key]
    V = (jnp.concatenate([a.reshape(size, -1) for a in v], axis=1) if v
         else jnp.zeros((size, 0), mod.DTYPE))
    out = jax.pure_callback(functools.partial(_np_hmp, key),
                            jax.ShapeDtypeStruct((size, mod.N_PARAMS), mod.DTYPE), x, y,
                            _flat(mod, params), V, *([lengths] if has_lengths else []),
                            vmap_method="sequential")
    return _split_flat(mod, out, (size,))


def _hmp_jvp(key, has_lengths, size, primals, tangents):
    params, x, y, lengths, v = primals
    tparams, tx, ty, tl, tv = tangents
    if not all(_zero_tangent(t) for t in (*tparams, tx, ty, *([tl] if has_lengths else []))):
        raise NotImplementedError(_THIRD_ORDER)
    tv = _tangents(tv, v)
    return (_hmp(key, has_lengths, size, params, x, y, lengths, v),
            _hmp(key, has_lengths, size, params, x, y, lengths, tv))


_hmp.defjvp(_hmp_jvp, symbolic_zeros=True)

hvp_p.def_impl(_hvp_impl)
hvp_p.def_abstract_eval(_hvp_abstract)
ad.primitive_jvps[hvp_p] = _hvp_jvp
ad.primitive_transposes[hvp_p] = _hvp_transpose
batching.primitive_batchers[hvp_p] = _hvp_batch
mlir.register_lowering(hvp_p, mlir.lower_fun(_hvp_impl, multiple_results=True))


# ---- the loss and the gradient: custom_jvp ---------------------------------

def _zero_tangent(t):
    return type(t) is SymbolicZero


def _refuse_data_tangents(tx, ty, tl):
    for t, what in ((tx, "x"), (ty, "y"), (tl, "lengths")):
        if t is not None and not _zero_tangent(t):
            raise ValueError(f"{what}: bpgen differentiates the loss with respect to the "
                             f"parameters only (do not differentiate with respect to {what})")


def _tangents(tparams, params):
    return [jnp.zeros(jnp.shape(p), jnp.result_type(p)) if _zero_tangent(t) else t
            for t, p in zip(tparams, params)]


def _functions(mod):
    """(loss, grad) of ``mod`` over (params list, x, y, lengths or None)."""
    key = _key(mod)
    scalar = jax.ShapeDtypeStruct((), mod.DTYPE)
    vector = jax.ShapeDtypeStruct((mod.N_PARAMS,), mod.DTYPE)

    @functools.partial(jax.custom_jvp, nondiff_argnums=())
    def loss_fn(params, x, y, lengths):
        return jax.pure_callback(functools.partial(_np_loss, key), scalar, x, y,
                                 _flat(mod, params),
                                 *([lengths] if lengths is not None else []),
                                 vmap_method="sequential")

    @functools.partial(jax.custom_jvp, nondiff_argnums=())
    def grad_fn(params, x, y, lengths):
        out = jax.pure_callback(functools.partial(_np_grad, key), vector, x, y,
                                _flat(mod, params),
                                *([lengths] if lengths is not None else []),
                                vmap_method="sequential")
        return _split_flat(mod, out)

    def loss_jvp(primals, tangents):
        params, x, y, lengths = primals
        tparams, tx, ty, tl = tangents
        _refuse_data_tangents(tx, ty, tl)
        grads = grad_fn(params, x, y, lengths)
        dot = sum((jnp.vdot(g, t) for g, t in zip(grads, _tangents(tparams, params))
                   if not _zero_tangent(t)), jnp.zeros((), mod.DTYPE))
        return loss_fn(params, x, y, lengths), dot

    def grad_jvp(primals, tangents):
        params, x, y, lengths = primals
        tparams, tx, ty, tl = tangents
        _refuse_data_tangents(tx, ty, tl)
        hv = _bind(key, list(params), x, y, lengths, _tangents(tparams, params))
        return grad_fn(params, x, y, lengths), list(hv)

    loss_fn.defjvp(loss_jvp, symbolic_zeros=True)
    grad_fn.defjvp(grad_jvp, symbolic_zeros=True)
    return key, loss_fn, grad_fn


def _check(mod, params, x, y, lengths):
    """params (a mapping) as a list in PARAM_SHAPES order, x, y, lengths as arrays."""
    if not hasattr(params, "keys"):
        raise ValueError(f"params: expected a dict of arrays keyed like PARAM_SHAPES, got "
                         f"{type(params).__name__}")
    unknown = [k for k in params.keys() if k not in mod.PARAM_SHAPES]
    if unknown:
        raise ValueError(f"params: unknown key {unknown[0]!r} (expected: "
                         f"{', '.join(mod.PARAM_SHAPES)})")
    mats = []
    for key, shape in mod.PARAM_SHAPES.items():
        if key not in params:
            raise ValueError(f"params: missing key {key!r}")
        arr = jnp.asarray(params[key])
        if arr.dtype != mod.DTYPE:
            hint = (" (enable float64 in JAX: jax.config.update('jax_enable_x64', True))"
                    if mod.DTYPE == numpy.float64 and not jax.config.jax_enable_x64 else "")
            raise ValueError(f"params[{key!r}]: expected {mod.DTYPE} (the module's dtype), "
                             f"got {arr.dtype}{hint}")
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"params[{key!r}]: expected shape {tuple(shape)}, got "
                             f"{tuple(arr.shape)}")
        mats.append(arr)
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != mod.DTYPE and not (
            mod.DTYPE == numpy.float64 and x.dtype in (jnp.float32, jnp.float16)):
        raise ValueError(f"x: expected {mod.DTYPE} (the module's dtype) or integers, got "
                         f"{x.dtype}")
    y = jnp.asarray(y)
    return mats, x, y, None if lengths is None else jnp.asarray(lengths)


def loss(mod):
    """``f(params, x, y, lengths=None)``: the loss of ``mod`` as a JAX scalar."""
    _, loss_fn, _ = _functions(mod)

    def f(params, x, y, lengths=None):
        mats, x, y, lengths = _check(mod, params, x, y, lengths)
        return loss_fn(mats, x, y, lengths)
    f.__name__ = f.__qualname__ = f"loss_{getattr(mod, '__name__', 'module')}"
    # jit: an eager call would trace the custom_jvp function anew every time
    # (tens of ms); inside another transformation it is traced once anyway
    return jax.jit(f)


def grad(mod):
    """``g(params, x, y, lengths=None)``: the generated gradient as a dict
    (what ``jax.grad(loss(mod))`` gives, without the transposition)."""
    _, _, grad_fn = _functions(mod)

    def g(params, x, y, lengths=None):
        mats, x, y, lengths = _check(mod, params, x, y, lengths)
        return dict(zip(mod.PARAM_SHAPES, grad_fn(mats, x, y, lengths)))
    return jax.jit(g)


def hvp(mod):
    """``h(params, x, y, v, lengths=None)``: the generated Hessian-vector
    product as a dict (linear in v: transposable, batched as hmp)."""
    key = _key(mod)

    def h(params, x, y, v, lengths=None):
        mats, x, y, lengths = _check(mod, params, x, y, lengths)
        vmats, *_ = _check(mod, v, x, y, None)
        return dict(zip(mod.PARAM_SHAPES, _bind(key, mats, x, y, lengths, vmats)))
    return jax.jit(h)
