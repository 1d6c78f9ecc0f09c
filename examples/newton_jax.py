"""Newton-CG in JAX on the bpgen loss of the digits MLP (examples/digits_mlp.yaml).

The loss is ``bpgen.jax.loss(mod)``; each Newton step solves (H + λI) d = -g
by conjugate gradients (``jax.scipy.sparse.linalg.cg``) whose operator is
``jax.jvp`` of ``jax.grad`` of the loss (the module's exact Hessian-vector
product), with λ adapted Levenberg-Marquardt style; the whole step is one
``jax.jit``.  At the end ``jax.hessian`` of the loss on a small batch (the
module's exact Hessian, 2410 x 2410, checked against ``mod.hessian``) gives
its extreme eigenvalues.

    python examples/newton_jax.py [--iters 15] [--backend c|numpy]

Needs JAX (``pip install '.[jax]'``) and scikit-learn (``pip install
'.[examples]'``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # this checkout's bpgen
import bpgen  # noqa: E402
import train_digits  # noqa: E402  (this folder is on sys.path when run)

ARCH = Path(__file__).resolve().with_name("digits_mlp.yaml")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--backend", choices=("c", "numpy"), default="c")
    args = ap.parse_args(argv)
    try:
        import jax
    except ImportError:
        print("newton_jax.py needs JAX: pip install '.[jax]'", file=sys.stderr)
        return 1
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.scipy.sparse.linalg import cg

    import bpgen.jax as bj
    (x, y), (x_test, y_test) = train_digits.load_data()
    with tempfile.TemporaryDirectory(prefix="bpgen-newton-jax-") as out_dir:
        mod = bpgen.build(str(ARCH), backend=args.backend, out_dir=out_dir)
        f = bj.loss(mod)
        params = {k: jnp.asarray(v) for k, v in mod.init_params(0).items()}
        x, y = jnp.asarray(x), jnp.asarray(y)

        @jax.jit
        def newton_step(p, lam):
            g = jax.grad(f)(p, x, y)

            def hv(v):          # (H + lam I) v, H the module's exact Hessian
                hvv = jax.jvp(lambda q: jax.grad(f)(q, x, y), (p,), (v,))[1]
                return jax.tree.map(lambda a, b: a + lam * b, hvv, v)
            d, _ = cg(hv, jax.tree.map(jnp.negative, g), maxiter=50)
            return d, jax.tree.map(lambda a, b: jnp.vdot(a, b), g, d)

        lam, value = 1.0, float(f(params, x, y))
        print(f"{ARCH.name}: {mod.N_PARAMS} parameters, {len(x)} training images; "
              f"loss {value:.4f}")
        t0 = time.perf_counter()
        for it in range(1, args.iters + 1):
            d, _ = newton_step(params, lam)
            trial = jax.tree.map(jnp.add, params, d)
            new = float(f(trial, x, y))
            if new < value:
                params, value, lam = trial, new, max(lam / 3, 1e-4)
            else:
                lam *= 4
            print(f"iteration {it:2d}  loss {value:.5f}  lambda {lam:.2e}")
        print(f"{args.iters} Newton-CG iterations in {time.perf_counter() - t0:.1f}s")
        logits = mod.forward({k: np.asarray(v) for k, v in params.items()}, x_test)
        print(f"test accuracy {np.mean(logits.argmax(1) == y_test):.2%}")
        t0 = time.perf_counter()
        H = jax.hessian(f)(params, x[:64], y[:64])
        flat = np.block([[np.asarray(H[a][b]).reshape(int(np.prod(mod.PARAM_SHAPES[a])), -1)
                          for b in mod.PARAM_SHAPES] for a in mod.PARAM_SHAPES])
        ref = mod.hessian({k: np.asarray(v) for k, v in params.items()}, np.asarray(x[:64]),
                          np.asarray(y[:64]))
        print(f"jax.hessian against the module's hessian: max difference "
              f"{np.abs(flat - ref).max():.1e}")
        ev = np.linalg.eigvalsh(flat)
        print(f"jax.hessian on 64 images ({time.perf_counter() - t0:.1f}s): eigenvalues "
              f"from {ev[0]:.3g} to {ev[-1]:.3g}, {int((ev < -1e-10).sum())} negative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
