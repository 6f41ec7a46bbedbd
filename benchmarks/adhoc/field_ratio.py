"""No-graph field evaluation against the graph forward at 2^16 samples, 2 threads: interleaved medians, and
the median of per-round ratios (``bench.median_round_ratio``), which CI checks.

Both in the training precision (``mixed``: bf16 autocast on the CPU) and in fp32. Run alone, from outside
the repository, for any tree: ``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python field_ratio.py``. Trees
before 6874076 run with glibc's default malloc, whose page faults inflated the graph forward (benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

try:  # trees before issue 14 kept the benchmark helpers in the package
    from ngp_ohem import bench
except ImportError:
    from benchmarks import bench
from ngp_ohem.precision import Precision, network

torch.set_num_threads(2)
field, x, d = bench.field_workload(1 << 16)
with torch.no_grad():
    field.encoding.table.normal_(0, 1e-2)  # trained-size features, not the initial 1e-4 noise
mixed = network(field, Precision("mixed", torch.device("cpu")))
FUSED = getattr(field, "fused_inference", False)  # the tree's default


def no_graph(f: torch.nn.Module, fused: bool) -> Callable[[], None]:
    def run() -> None:
        field.fused_inference = fused
        with torch.no_grad():
            f(x, d)
        field.fused_inference = FUSED

    return run


units = {
    "graph_mixed": lambda: mixed(x, d),
    "nograph_mixed": no_graph(mixed, FUSED),
    "nograph_mixed_module": no_graph(mixed, False),
    "graph_fp32": lambda: field(x, d),
    "nograph_fp32": no_graph(field, FUSED),
    "fwdbwd_mixed": lambda: mixed(x, d).sum().backward(),
}
for _ in range(2):
    for unit in units.values():
        unit()
m = bench.interleaved_medians(units, rounds=15)
print({k: round(v * 1e3, 1) for k, v in m.items()})
mixed_ratio, fp32_ratio = m["nograph_mixed"] / m["graph_mixed"], m["nograph_fp32"] / m["graph_fp32"]
print(f"no-graph / graph forward, ratio of medians: mixed {mixed_ratio:.3f}, fp32 {fp32_ratio:.3f}")
if hasattr(bench, "median_round_ratio"):  # trees before it only have the line above
    mixed_ratio = bench.median_round_ratio(units["nograph_mixed"], units["graph_mixed"], rounds=31)
    fp32_ratio = bench.median_round_ratio(units["nograph_fp32"], units["graph_fp32"], rounds=31)
    print(f"no-graph / graph forward, median of 31 per-round ratios: mixed {mixed_ratio:.3f}, fp32 {fp32_ratio:.3f}")
