"""conftest.DEFAULT_SAMPLE names the cases of the heaviest checks that the
default run takes (--full takes all): every name must be a real case, or
the default run would check less than the table says."""
import os
import subprocess
import sys

from conftest import DEFAULT_SAMPLE, ROOT, Prefixed


def test_every_sampled_case_exists():
    files = sorted({key.split("::")[0] for key in DEFAULT_SAMPLE})
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-n", "0",
                          "-p", "no:cacheprovider", *(os.path.join("tests", f) for f in files)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    collected = {line.strip().split("/")[-1] for line in out.splitlines() if "::" in line}
    checked = 0
    for key, params in DEFAULT_SAMPLE.items():
        cases = {c[len(key) + 1:-1] for c in collected if c.startswith(key + "[")}
        if not cases and key.startswith(("test_torch", "test_jax")):
            continue       # the extra is missing here: its file collects nothing
        checked += 1
        if isinstance(params, Prefixed):
            assert any(c.startswith(params.prefix) for c in cases), key
            params = params.extra | {c for c in cases if c.startswith(params.prefix)}
        assert params <= cases, f"{key}: not cases: {sorted(params - cases)}"
        assert params != cases, f"{key}: the sample is every case"
    assert checked >= len(DEFAULT_SAMPLE) - 4
