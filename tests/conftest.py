"""Shared fixtures: built modules are cached per (architecture, backend)."""
import dataclasses
import json
import os

import pytest

# One copy of each C function (baseline x86-64) instead of the AVX-512, AVX2
# and baseline copies users get: the suite compiles ~150 extensions, and the
# clones take ~2.5x as long.  tests/test_clones.py builds a sample of every
# family with the clones; BPGEN_CLONES=1 runs the whole suite with them.
os.environ.setdefault("BPGEN_CLONES", "0")
# The suite runs 2 pytest workers on 2 cores: its modules' BLAS keeps 1 thread
# (a module's default is every core, see docs/performance.md, "Threads");
# tests/test_threads.py checks the default in fresh processes.
os.environ.setdefault("BPGEN_NUM_THREADS", "1")

import bpgen  # noqa: E402
from bpgen.backends.c import build as _c_build  # noqa: E402
from bpgen.spec import ACTIVATIONS, LOSSES  # noqa: E402


def users_build_config():
    """The C build configuration users get by default (every function in its
    per-vector-width copies), whatever this session's BPGEN_CLONES."""
    config = _c_build.BUILD
    return dataclasses.replace(config, cflags=tuple(f for f in config.cflags
                                                    if f != "-DBPG_NO_CLONES"))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files (generated/) from the current generator")
    parser.addoption("--full", action="store_true", default=False,
                     help="also run the tests marked slow (more architectures through "
                          "the same checks; BPGEN_FULL_TESTS=1 does the same)")


def pytest_configure(config):
    if config.getoption("--full"):
        # read by checks sized at import (tests/test_properties.py's examples)
        os.environ["BPGEN_FULL_TESTS"] = "1"
    config.addinivalue_line("markers", "slow: more cases of a check the default run already "
                                       "makes on a sample (run with --full)")


# The heaviest parametrised checks: the default run takes the cases listed
# here (every layer family, both backends, both dtypes among them), --full
# every case.  "test file::test function" -> the parameter ids run by default.
_PER_SAMPLE = {"numpy-dense-relu-sce-l2", "numpy-lstm-sce-last-k2", "numpy-conv-max-sce",
               "numpy-block-prenorm-sce-last", "numpy-dense-tanh-sce-f32",
               "numpy-lstm-wide-gram", "c-gru-bce-all-l2", "c-layernorm-tanh-sce",
               "c-embedding-vocab-gram", "c-conv-few-pixels-gram"}
class Prefixed:
    """A sample: every case whose id starts with ``prefix`` (the cheap NumPy
    ones) and the ids in ``extra``."""

    def __init__(self, prefix: str, extra: set):
        self.prefix, self.extra = prefix, set(extra)

    def __contains__(self, param) -> bool:
        return param is not None and (param.startswith(self.prefix) or param in self.extra)


_GENERATED = (
    {f"{act}-{loss}-{dtype}-numpy" for act in ACTIVATIONS for loss in LOSSES
     for dtype in ("float64", "float32")}
    | {f"{act}-{LOSSES[(i + k) % len(LOSSES)]}-{dtype}-c"
       for i, act in enumerate(sorted(ACTIVATIONS)) for k, dtype in enumerate(("float64", "float32"))})

# test_conv.py's cases -> the dtype of their C module in the default run
_CONV_C = {"k3p1-relu-max3s2": "float64", "k3s2-tanh-avg": "float32",
           "k1-identity-maxall": "float32", "two-stages": "float64",
           "pool-first": "float64", "large-patches": "float32"}

DEFAULT_SAMPLE = {
    "test_per_sample.py::test_per_sample_grads_against_each_sample_alone": _PER_SAMPLE,
    "test_per_sample.py::test_norms_and_clipped_grad": _PER_SAMPLE,
    # NumPy against C: the C cases above (each C case is a compile)
    "test_per_sample.py::test_numpy_matches_c": {
        "gru-bce-all-l2", "layernorm-tanh-sce", "embedding-vocab-gram", "conv-few-pixels-gram",
        "block-prenorm-sce-last"},
    "test_per_sample.py::test_with_lengths": {"numpy-birnn_gru-last-k2", "c-len_block_pos"},
    "test_export.py::test_export_matches_module": {"mlp", "lstm_trunc", "cnn", "transformer32"},
    "test_export.py::test_export_hessian": {"transformer"},
    "test_export.py::test_export_vector_width": {"lstm_trunc-64", "cnn-32"},
    "test_export.py::test_work_bytes_macros": {"lstm_trunc"},
    "test_export.py::test_cblas": {"mlp"},
    "test_export.py::test_sanitizers": {"lstm_trunc"},
    "test_export.py::test_threads": {"lstm_trunc"},
    "test_jax.py::test_hessians_equal_the_module": {"mlp-numpy", "lstm-c"},
    "test_jax.py::test_check_grads_order_2": {"mlp-numpy"},
    "test_jax.py::test_jvp_and_vmap": {"mlp-numpy", "conv-c"},
    "test_torch.py::test_gradcheck_and_gradgradcheck": {"mlp"},
    "test_torch.py::test_opcheck": {"mlp-numpy"},
    "test_steps_any.py::test_any_equals_fixed_steps": {
        "numpy-birnn_lstm-last-k2-float64-mse", "numpy-len_block_pos", "c-len_block_causal"},
    "test_steps_any.py::test_any_c_functions_stay_in_bounds": {"len_block_pos"},
    "test_params_file.py::test_round_trip": {"lstm-c-float32", "transformer-numpy-float64"},
    # load_params is the same Python code in both backends (common/runtime/api.py):
    # every other architecture on NumPy, one in C (each C case is a compile)
    "test_params_file.py::test_another_architecture_is_refused": {
        "shapes-numpy", "activation-numpy", "dtype-numpy", "l2-numpy", "keys-numpy",
        "kind-numpy", "shapes-c"},
    # every activation x loss x dtype on NumPy; in C every activation in both
    # dtypes, the losses in turn (each C case is a compile)
    "test_generated.py::test_against_reference_and_fd": _GENERATED,
    # every conv case on NumPy in both dtypes; in C each case once, in one
    # dtype or the other (two-stages and k3s2-tanh-avg are test_per_sample's
    # C conv modules too)
    "test_conv.py::test_conv_against_reference_and_fd": (
        {f"{cid}-numpy-{dtype}" for cid in _CONV_C for dtype in ("float64", "float32")}
        | {f"{cid}-c-{dtype}" for cid, dtype in _CONV_C.items()}),
    "test_conv.py::test_conv_numpy_matches_c": {f"{cid}-{dtype}"
                                                for cid, dtype in _CONV_C.items()},
    # the same modules: NumPy against C and large values on the C cases above
    # (the other 36 activation x loss x dtype modules are a compile each)
    "test_generated.py::test_numpy_matches_c": {c[:-len("-c")] for c in _GENERATED
                                               if c.endswith("-c")},
    "test_hostile_values.py::test_large_values_stay_finite": _GENERATED,
    "test_layernorm.py::test_layernorm_against_reference_and_fd": {
        "seq-last-numpy-float64", "seq-last-numpy-float32", "seq-all-numpy-float64",
        "seq-all-numpy-float32", "flat-sce-numpy-float64", "flat-sce-numpy-float32",
        "flat-mse-l2-numpy-float64", "flat-mse-l2-numpy-float32",
        "seq-last-c-float64", "seq-all-c-float32", "flat-sce-c-float64", "flat-mse-l2-c-float32"},
    # alpha in C: test_conv's two-stages (leaky_relu 0.1) and
    # test_hessian_structure's deep nets (elu 0.7) build it
    "test_generated.py::test_activation_alpha": {"leaky_relu-0.2-numpy", "elu-0.5-numpy"},
    # the deep structured Hessian in C: softmax cross-entropy in float64, mse in
    # float32 (test_deep_float32); every loss on NumPy
    "test_hessian_structure.py::test_deep_structured_hessian_diag_and_blocks": {
        "mse-sigmoid-numpy", "softmax_cross_entropy-tanh-numpy",
        "sigmoid_binary_cross_entropy-identity-numpy", "softmax_cross_entropy-tanh-c"},
    # NumPy against C on the same C modules (the other dtype of each is a compile)
    "test_layernorm.py::test_layernorm_numpy_matches_c": {
        "seq-last-float64", "seq-all-float32", "flat-sce-float64", "flat-mse-l2-float32"},
    "test_lengths.py::test_lengths_against_reference": Prefixed("numpy-", {
        "c-birnn_gru-last-k2-float64-mse", "c-len_block_pos", "c-lstm-all-k2-float32-sig",
        "c-gru-last-k2-float32-mse", "c-rnn_tanh-last-k2-float32-sig",
        "c-rnn_relu-last-k2-float64-mse"}),
    "test_clones.py::test_clones_match_numpy": {
        "dense_relu_f32", "dense_sce_l2", "conv_pool", "rnn_bce_last"},
    "test_recurrent.py::test_stacked_truncated": {"numpy"},
    "test_per_sample.py::test_norms_and_clipped_against_finite_differences": Prefixed("numpy-", {
        "c-gru-bce-all-l2", "c-layernorm-tanh-sce", "c-embedding-vocab-gram",
        "c-conv-few-pixels-gram"}),
    "test_per_sample.py::test_c_per_sample_functions_stay_in_bounds": {
        "dense-relu-sce-l2", "lstm-sce-last-k2", "conv-two-stages", "embedding-vocab-gram",
        "conv-few-pixels-gram", "gru-bce-all-l2"},
    "test_steps_any.py::test_any_hessian_columns_stay_in_bounds": {
        "lstm-all-k2-float32-sig", "len_block_causal", "len_block_pos"},
    "test_jax.py::test_grad_and_jit_grad": {
        "mlp-numpy", "bce-numpy", "conv-numpy", "lstm-numpy", "birnn-numpy", "transformer-numpy",
        "mlp-c", "conv-c", "lstm-c"},
    "test_distributed.py::test_equals_single_process": {
        "mlp-c-chunks(5, 1, 9, 8)", "gru_all-numpy-lengths-chunks7", "rnn_last-numpy-lengths-chunks1",
        "mlp32-c-chunks23"},
}


def pytest_collection_modifyitems(config, items):
    """The README's test command stays within ~10 minutes on 2 cores: tests
    marked slow, and the cases of DEFAULT_SAMPLE's checks beyond its sample
    (the same check on more architectures), run with --full."""
    if config.getoption("--full") or os.environ.get("BPGEN_FULL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: the same check on more cases; run with --full "
                                   "(or BPGEN_FULL_TESTS=1)")
    for item in items:
        fn = getattr(item, "originalname", item.name)
        sample = DEFAULT_SAMPLE.get(f"{os.path.basename(str(item.fspath))}::{fn}")
        param = item.name[len(fn) + 1:-1] if item.name != fn else None
        if "slow" in item.keywords or (sample is not None and param not in sample):
            item.add_marker(skip)



@pytest.fixture(scope="session")
def update_golden(request):
    return request.config.getoption("--update-golden")


@pytest.fixture(scope="session")
def builder(tmp_path_factory):
    """build(arch_dict, backend) -> module, each architecture built once."""
    root = tmp_path_factory.mktemp("built")
    cache = {}

    def build(arch, backend):
        key = (json.dumps(arch, sort_keys=True), backend)
        if key not in cache:
            out = root / f"m{len(cache)}"
            cache[key] = bpgen.build(arch, backend=backend, out_dir=out)
        return cache[key]
    return build


def mlp(activation="tanh", loss="mse", dtype="float64", hidden=(5, 4), out=3,
        features=4, l2=0.0, alpha=None, name="net"):
    """A small dense network as an architecture dict."""
    layers = []
    for units in hidden:
        layer = {"type": "dense", "units": units, "activation": activation}
        if alpha is not None:
            layer["alpha"] = alpha
        layers.append(layer)
    layers.append({"type": "dense", "units": out})
    arch = {"name": name, "dtype": dtype, "input": {"features": features},
            "layers": layers, "loss": loss}
    if l2:
        arch["regularization"] = {"l2": l2}
    return arch


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
