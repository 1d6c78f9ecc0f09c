"""A PyTorch training step through ``bpgen.torch.module`` against the same
step in plain PyTorch (issue 20), for benchmarks/run.py.

Usage, from the repository root::

    python benchmarks/run.py --torch-step-only [--quick]
    python benchmarks/run.py --cases step_mlp_mnist,step_cnn_digits

Each case builds the C module, wraps it with ``bpgen.torch.module`` and
times one step of ``torch.optim.SGD`` (``zero_grad``, ``loss(x, y)``,
``backward``, ``step``) against the same step of the same network written
in PyTorch (benchmarks/peers.py's eager loss over leaf tensors, the same
initial parameters and batch), by the method of run.py (one process pinned
to one CPU, one thread, the median of R repeats, the two interleaved
repeat by repeat).  After the timings both runs have taken the same number
of steps from the same start, so their parameters are compared (max
relative error printed): the step is the same step.  The learning rate is
small (1e-3) so that the parameters stay comparable.
"""
import sys
import time

import numpy as np

LR = 1e-3


def _cases():
    from run import CASES
    return {  # name -> (architecture, N)
        "step_mlp_mnist": (dict(CASES["mlp_mnist"][0], name="step_mlp_mnist"),
                           CASES["mlp_mnist"][1]),
        "step_cnn_digits": (dict(CASES["cnn_digits"][0], name="step_cnn_digits"),
                            CASES["cnn_digits"][1]),
    }


def names():
    return list(_cases())


def run_case(name, arch, n, tmp, repeats, tools):
    import torch

    import bpgen.torch as bt
    from peers import _torch_loss

    mod = tools.build(arch, "c", tmp)[0]
    params = tools.make_params(mod)
    x, y = tools.make_data(arch, n)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    net = bt.module(mod)
    with torch.no_grad():
        for key, value in params.items():
            net.get_parameter(key).copy_(torch.from_numpy(value))
    opt_b = torch.optim.SGD(net.parameters(), lr=LR)

    def bpgen_step():
        opt_b.zero_grad()
        net.loss(tx, ty).backward()
        opt_b.step()

    loss_fn = _torch_loss(arch)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt_t = torch.optim.SGD(list(leaves.values()), lr=LR)

    def torch_step():
        opt_t.zero_grad()
        loss_fn(leaves, tx, ty).backward()
        opt_t.step()

    for _ in range(3):                  # warm-up, the same steps for both
        bpgen_step()
        torch_step()
    t0 = time.perf_counter()
    bpgen_step()
    number = max(1, round(0.05 / (time.perf_counter() - t0)))
    torch_step()
    times = {"bpgen": [], "torch": []}
    for _ in range(repeats):           # interleaved: the same load for both
        for who, step in (("bpgen", bpgen_step), ("torch", torch_step)):
            t0 = time.perf_counter()
            for _ in range(number):
                step()
            times[who].append((time.perf_counter() - t0) / number)
    got = {k: net.get_parameter(k).detach().numpy() for k in params}
    want = {k: v.detach().numpy() for k, v in leaves.items()}
    err = max(float(np.max(np.abs(got[k] - want[k])) / max(1e-300, np.max(np.abs(want[k]))))
              for k in params)
    row = {"case": name, "N": n, "bpgen_us": float(np.median(times["bpgen"])) * 1e6,
           "torch_us": float(np.median(times["torch"])) * 1e6, "max_rel_param_diff": err}
    row["ratio"] = row["bpgen_us"] / row["torch_us"]
    return row


def run_section(names_, tmp, repeats, tools):
    print("A PyTorch training step (torch.optim.SGD: zero_grad, loss, backward, step), in us:\n"
          "through bpgen.torch.module (the C module) against the same network in plain "
          "PyTorch;\nratio < 1: the step through bpgen is faster\n")
    cases = _cases()
    rows = [run_case(name, *cases[name], tmp, repeats, tools) for name in names_]
    print(f"{'case':<18s}{'N':>6s}{'bpgen.torch us':>16s}{'PyTorch us':>12s}{'ratio':>8s}"
          f"{'params differ':>15s}")
    for r in rows:
        print(f"{r['case']:<18s}{r['N']:>6d}{r['bpgen_us']:>16.1f}{r['torch_us']:>12.1f}"
              f"{r['ratio']:>8.2f}{r['max_rel_param_diff']:>15.1e}")
    return {"cases": rows}


if __name__ == "__main__":
    sys.exit("run it through benchmarks/run.py --torch-step-only")
