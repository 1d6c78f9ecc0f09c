"""Train a character-level transformer language model, then look at the exact
Hessian of each of its parameter blocks.

The text is the Zen of Python (PEP 20, public domain), shipped with every
Python as the module ``this`` (ROT13-encoded; decoded here): about 860
characters, no download.  Each sample is a window of T = 16 characters and
its target the same window shifted by one (the next character at every
step, ``softmax_cross_entropy`` over all steps).  The network: token and
position embeddings (F = 16), two pre-norm transformer layers
(``block(residual){layernorm, attention 2 heads causal}``,
``block(residual){layernorm, dense 2F gelu, dense F}``) and a dense head to
the vocabulary.  Adam on minibatches of 32 windows prints the loss curve;
then a sample is generated from a prompt (greedy, one character at a time,
the causal mask making the last step's logits the next character's).

Finally the exact Hessian of the trained model's loss on a batch of 32
windows, block by block (``hessian_blocks``: one block per top-level layer,
the embedding, each transformer half and the head; each the exact
second derivative, no Gauss-Newton approximation), and the extreme
eigenvalues of each: the kind of per-block spectra Zhang et al. (2024)
measure.  The batch and the parameters are saved to ``charlm_hessian.npz``
with ``--save``; ``bpgen spectrum`` reads such a file for one architecture
file (this script builds its architecture from a dict, see ARCH).

    python examples/train_charlm.py [--backend c|numpy] [--steps 1500] [--seed 0]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import bpgen  # noqa: E402

with contextlib.redirect_stdout(io.StringIO()):     # importing it prints the text
    this = importlib.import_module("this")
TEXT = "".join(this.d.get(c, c) for c in this.s)
CHARS = sorted(set(TEXT))
STEPS, WIDTH = 16, 16


def layer(mlp_units):
    """One pre-norm transformer layer: two residual blocks."""
    return [{"type": "block", "residual": True, "layers": [
                {"type": "layernorm", "name": "norm"},
                {"type": "attention", "name": "mha", "heads": 2, "causal": True}]},
            {"type": "block", "residual": True, "layers": [
                {"type": "layernorm", "name": "norm"},
                {"type": "dense", "name": "up", "units": mlp_units, "activation": "gelu"},
                {"type": "dense", "name": "down", "units": WIDTH}]}]


ARCH = {"name": "charlm", "input": {"tokens": len(CHARS), "steps": STEPS},
        "layers": ([{"type": "embedding", "name": "emb", "units": WIDTH, "positions": True}]
                   + layer(2 * WIDTH) + layer(2 * WIDTH)
                   + [{"type": "dense", "name": "head", "units": len(CHARS)}]),
        "loss": "softmax_cross_entropy"}


def windows(ids, starts):
    x = np.stack([ids[s:s + STEPS] for s in starts])
    y = np.stack([ids[s + 1:s + STEPS + 1] for s in starts])
    return x, y


def adam(mod, params, ids, steps, rng, lr=3e-3, batch=32):
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(a) for k, a in params.items()}
    b1, b2 = 0.9, 0.999
    for step in range(1, steps + 1):
        x, y = windows(ids, rng.integers(0, len(ids) - STEPS - 1, size=batch))
        loss, grads = mod.loss_and_grad(params, x, y)
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            params[k] -= lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + 1e-8)
        if step == 1 or step % (steps // 10) == 0:
            print(f"  step {step:5d}  loss {loss:.3f}")
    return params


def sample(mod, params, prompt, length):
    ids = [CHARS.index(c) for c in prompt]
    for _ in range(length):
        window = (ids[-STEPS:] + [0] * STEPS)[:STEPS]        # causal: padding is never read
        last = min(len(ids), STEPS) - 1
        logits = mod.forward(params, np.array([window]))[0, last]
        ids.append(int(np.argmax(logits)))
    return "".join(CHARS[i] for i in ids)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("c", "numpy"), default="c")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", action="store_true", help="write charlm_hessian.npz")
    args = ap.parse_args()
    ids = np.array([CHARS.index(c) for c in TEXT])
    print(f"text: the Zen of Python, {len(TEXT)} characters, vocabulary {len(CHARS)}")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        mod = bpgen.build(ARCH, backend=args.backend, out_dir=out)
        print(f"built the {args.backend} module in {time.perf_counter() - t0:.1f} s: "
              f"{mod.N_PARAMS} parameters")
        rng = np.random.default_rng(args.seed)
        params = mod.init_params(args.seed)
        t0 = time.perf_counter()
        params = adam(mod, params, ids, args.steps, rng)
        print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s")
        print("sample:", repr(sample(mod, params, "Beautiful is", 120)))

        x, y = windows(ids, rng.integers(0, len(ids) - STEPS - 1, size=32))
        t0 = time.perf_counter()
        blocks = mod.hessian_blocks(params, x, y)
        print(f"\nexact Hessian blocks of the loss on 32 windows "
              f"({time.perf_counter() - t0:.1f} s):")
        print(f"  {'block':<8} {'params':>6}  {'largest eigenvalues':<32} {'smallest':>10} "
              f"{'negative':>8}")
        for name, (keys, h) in blocks.items():
            ev = np.linalg.eigvalsh(h)
            top = ", ".join(f"{e:.3g}" for e in ev[::-1][:3])
            print(f"  {name:<8} {h.shape[0]:>6}  {top:<32} {ev[0]:>10.3g} "
                  f"{int(np.sum(ev < -1e-10 * ev[-1])):>8}")
        if args.save:
            np.savez("charlm_hessian.npz", x=x, y=y, **params)
            print("wrote charlm_hessian.npz")


if __name__ == "__main__":
    main()
