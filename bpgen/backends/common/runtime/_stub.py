"""Stand-ins for the names a generated module defines around the runtime
files (its constants and its backend's call functions), so that the runtime
files import, lint and unit-test on their own.  Tests set the real values
on the runtime modules; nothing here reaches a generated module."""
import collections

import numpy

DTYPE = numpy.dtype("float64")
PARAM_SHAPES = collections.OrderedDict()
N_PARAMS = 0
INPUT_SHAPE = (1,)
INPUT_KIND = "features"
_X_DTYPE = None
_X_BOUND = None
OUTPUT_UNITS = 1
STEPS = None
_MAX_STEPS = None
SEQUENCE_OUTPUT = False
LOSS_ALL_STEPS = False
_TRUNCATE = None
LOSS = "loss"
TARGET_KIND = "real"
TARGET_RANGE = None
_INIT = {}
_L2 = 0.0
_L2_KEYS = ()
_FACTORS = {}
_GRAD_TERMS = {}
_CURV_LAYERS = []
_CURV_LOSS = None
_CURV_FORM = "diagonal"
_BYTES_PER_SAMPLE = 8
_ASSEMBLY_PER_SAMPLE = {}
ARCHITECTURE_HASH = ""
ARCHITECTURE = "{}"


def _run(name, n, args, scratch=False):
    """Run generated function ``name``: its outputs as a list of matrices
    (``scratch``: in a buffer the thread keeps, C backend)."""
    raise NotImplementedError


def _per_sample_native(name, n, args, max_norm=None):
    """Run per-sample function ``name`` wholly in generated code: its flat
    output [loss, norms, (clipped_grad) the clipped gradient], or None
    when the backend has none for it (the runtime's products then serve)."""
    raise NotImplementedError


def _run_flat(name, n, args, start=0):
    """The outputs from index ``start`` on, concatenated into one vector."""
    raise NotImplementedError


def _hessian_columns(n, args, first, count):
    """Rows first .. first+count-1 of the Hessian, a (count, N_PARAMS) array."""
    raise NotImplementedError


def _hessian_times(n, args, vt):
    """H·v for every row v of vt, or None when the backend has no shared pass."""
    raise NotImplementedError


def _structured_diag(mats, outs, n):
    raise NotImplementedError
