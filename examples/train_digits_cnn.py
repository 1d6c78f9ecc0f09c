"""Train the digits CNN (examples/digits_cnn.yaml) with a bpgen-generated module.

The same data as examples/train_digits.py: scikit-learn's bundled 8x8 digits
(1797 images, no download), the same fixed random 360 of them as the test set
(the same for every --seed), the rest for training, and the same Adam.  Here
each image stays an image, x of shape (N, 1, 8, 8), and the network is
conv 3x3 (8 filters, relu) -> max-pool 2x2 -> conv 3x3 (16 filters, relu) ->
max-pool 2x2 -> flatten -> dense 10, both convolutions padded by 1.

    python examples/train_digits_cnn.py [--backend c|numpy] [--epochs 20] [--seed 0]

The generated sources go to a temporary directory that is removed when the
script ends, so the committed golden files in ``generated/`` are never touched;
the compiled C extension is still cached under ``$BPGEN_CACHE_DIR`` (default
``~/.cache/bpgen``), so a second run does not recompile it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The matrices here are small (batch 32 x 64 pixels x 8 filters): a multithreaded
# BLAS only adds overhead.  One thread unless the caller says otherwise; must be
# set before NumPy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import train_digits  # noqa: E402  (this folder is on sys.path when run)

ARCH = Path(__file__).resolve().with_name("digits_cnn.yaml")


def load_data():
    """train_digits.py's split, each image as (1, 8, 8): x (N, 1, 8, 8), labels (N,)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("train_digits_cnn.py needs scikit-learn: pip install '.[examples]'",
              file=sys.stderr)
        sys.exit(1)
    return [(np.ascontiguousarray(x.reshape(-1, 1, 8, 8)), y)
            for x, y in train_digits.load_data()]


def main(argv=None):
    return train_digits.main(argv, arch=ARCH, load=load_data, epochs=20, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
