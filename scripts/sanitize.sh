#!/usr/bin/env bash
# Run a subset of the C tests with the generated C modules built under
# AddressSanitizer + UndefinedBehaviorSanitizer (BPGEN_SANITIZE=1, see
# bpgen/backends/c/build.py), in a fresh compile cache.
#
#   bash scripts/sanitize.sh           # every C layer type and function, more cases (~1-2 min)
#   bash scripts/sanitize.sh --quick   # tests/test_c_bounds.py's default cases only (< 1 min)
#   bash scripts/sanitize.sh --blas    # products to OpenBLAS as usual (default: all inline)
#   bash scripts/sanitize.sh -- ARGS   # extra pytest arguments (-x; -k EXPR replaces ours)
#
# By default every matrix product runs inline: OpenBLAS is not instrumented,
# so products handed to it would go unchecked (scripts/memcheck.py checks
# that path under valgrind).  The BLAS is hidden by a scipy_openblas32 that
# fails to import, which bpgen treats as "no BLAS installed".
#
# Exits non-zero if a test fails or a sanitizer reports anything: UBSan is
# built with -fno-sanitize-recover (and runs with halt_on_error=1), ASan
# aborts on its first error; reports are looked for in ASan's log files and
# in stderr as well, so that one is caught even where a process's exit
# status would not be.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
blas=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --blas) blas=1 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

python=${PYTHON:-python}
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
for lib in "$asan" "$ubsan"; do
    # gcc prints the bare name when it does not have the library
    if [ "${lib#/}" = "$lib" ] || [ ! -e "$lib" ]; then
        echo "sanitize.sh: $lib not found (install gcc's libasan and libubsan)" >&2
        exit 2
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bpgen-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cache" "$work/logs" "$work/noblas/scipy_openblas32"
echo 'raise ImportError("hidden by scripts/sanitize.sh: products run inline")' \
    > "$work/noblas/scipy_openblas32/__init__.py"

# Two groups, run at the same time (one per core; C builds dominate).
# test_c_bounds calls every generated C function (forward, loss,
# loss_and_grad, hvp, ggn_vp, grad_factors, curvature) of a dense MLP with
# layernorm, an LSTM (last step, truncated), a CNN (conv2d, maxpool2d,
# avgpool2d, flatten), a float32 MLP (sigmoid BCE) and, with
# BPGEN_BOUNDS_ALL=1, an rnn with layernorm at every step, a float32 gru
# and a birnn: every C layer type and loss, both dtypes, steps all and last,
# then the Python API of each with hostile arrays.  The second group adds
# other shapes: strides that do not divide, padding 2, a 1x1 kernel and a
# 1x1 pooled map, an lstm over every step and a truncated birnn (each against
# the reference and finite differences), the workspace kept between
# calls and threads (test_c_calls), the CPython entry points with
# hostile arguments (test_fastcall), and every entry point's batch split
# across threads (test_threads: steps all and last, float32, uneven slices,
# padded batches with lengths).
group1=(tests/test_c_bounds.py)
conv=tests/test_conv.py::test_conv_against_reference_and_fd
rec=tests/test_recurrent.py::test_against_reference_and_fd
group2=(
    "${conv}[two-stages-c-float32]"
    "${conv}[k3s2-tanh-avg-c-float64]"
    "${conv}[k1-identity-maxall-c-float64]"
    "${rec}[c-lstm-all-k2-float32-sig]"
    "${rec}[c-birnn_rnn-last-k2-float64-sof]"
    tests/test_c_calls.py
    tests/test_fastcall.py
    tests/test_threads.py::test_split_equals_one_thread_and_is_reproducible
    tests/test_threads.py::test_split_l2_weights_sum_to_one
    tests/test_threads.py::test_split_with_lengths_equals_one_thread
)

# BPGEN_CLONES=1: every function in its AVX-512, AVX2 and baseline copies, as
# users get them (the test suite's conftest builds one copy unless told)
# BPGEN_FULL_TESTS=1: the cases named above run whether or not the default
# run's sample (conftest.DEFAULT_SAMPLE) takes them
export BPGEN_SANITIZE=1 BPGEN_CLONES=1 BPGEN_CACHE_DIR="$work/cache" BPGEN_BOUNDS_ALL=$((1 - quick))
export BPGEN_FULL_TESTS=1
if [ "$blas" = 0 ]; then
    export PYTHONPATH="$work/noblas${PYTHONPATH:+:$PYTHONPATH}"
fi
# detect_leaks=0: CPython's own allocations would be reported as leaks.
# ASan writes its reports to files (children's too); UBSan ignores log_path
# when it runs alongside ASan, so its reports go to stderr, which pytest must
# not capture at the file-descriptor level (--capture=sys): a report printed
# just before the process aborts would be lost with the captured output.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$work/logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# The sanitizer runtimes are preloaded into the test process only: it drops
# LD_PRELOAD from its environment once started, so that the compilers it
# runs (cffi builds) do not load them too.
run_pytest='import os, sys; os.environ.pop("LD_PRELOAD", None); import pytest; sys.exit(pytest.main())'
preload="$asan:$ubsan${LD_PRELOAD:+:$LD_PRELOAD}"
# not huge_batch: that test limits its child's address space, which ASan's
# shadow memory cannot live with
select="not huge_batch"

run_group() {    # run_group NAME TESTS...: stdout to NAME.out, stderr to NAME.err and ours
    local name=$1
    shift
    ( LD_PRELOAD="$preload" "$python" -c "$run_pytest" -p no:cacheprovider -n 0 --capture=sys \
          -k "$select" "$@" ${extra[@]+"${extra[@]}"} \
          2>&1 1>"$work/$name.out" | tee "$work/$name.err" >&2 )
}

echo "sanitize.sh: ASan + UBSan, $([ "$blas" = 1 ] && echo "BLAS" || echo "inline products")," \
     "cache $BPGEN_CACHE_DIR"
start=$SECONDS
pids=()
run_group group1 "${group1[@]}" & pids+=($!)
if [ "$quick" = 0 ]; then
    run_group group2 "${group2[@]}" & pids+=($!)
fi
status=0
for pid in "${pids[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    # 5: pytest selected no test in this group (a -k EXPR given after --)
    if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
        status=$rc
    fi
done
cat "$work"/group*.out

found=0
for f in "$work"/logs/*; do
    [ -e "$f" ] || continue
    echo "==== sanitizer report: $(basename "$f")" >&2
    cat "$f" >&2
    found=$((found + 1))
done
pattern="runtime error:|ERROR: (Address|Undefined|Leak)Sanitizer|SUMMARY: "
ub=$(cat "$work"/group*.err | grep -c -E "$pattern" || true)
found=$((found + ub))
if [ "$found" != 0 ]; then
    echo "sanitize.sh: FAILED: $found sanitizer report(s) (see above)" >&2
    exit 1
fi
if [ "$status" != 0 ]; then
    echo "sanitize.sh: FAILED: pytest exited with status $status" >&2
    exit "$status"
fi
echo "sanitize.sh: OK: no sanitizer report ($((SECONDS - start)) s)"
