"""The field's graph forward and no-graph pass at 2^16 (precision mixed, 2 threads), alternated call by call:
every call's time, their medians, the ratio of medians and the median of per-round ratios.

What showed that every call of the graph forward faulted its buffers in while glibc kept its default malloc
(benchmarks/README.md, "Page faults"). Run alone, from outside the repository, for any tree, with and without
glibc's variables: ``cd /tmp && [MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184]
PYTHONPATH=<tree> <repo>/.venv/bin/python graph_forward_calls.py`` (trees from 6874076 on set the heap
themselves). ``--fused-loop N`` runs only the no-graph pass N times, to profile it
(``perf record -e cpu-clock -F 4000 -- python graph_forward_calls.py --fused-loop 1000``).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

try:  # trees before issue 14 kept the benchmark helpers in the package
    from ngp_ohem import bench
except ImportError:
    from benchmarks import bench
from ngp_ohem.precision import Precision, network

torch.set_num_threads(1 if "--fused-loop" in sys.argv else 2)
field, x, d = bench.field_workload(1 << 16)
with torch.no_grad():
    field.encoding.table.normal_(0, 1e-2)  # trained-size features
mixed = network(field, Precision("mixed", torch.device("cpu")))


def no_graph() -> None:
    with torch.no_grad():
        mixed(x, d)


def graph() -> None:
    mixed(x, d)


def ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


if "--fused-loop" in sys.argv:
    for _ in range(int(sys.argv[sys.argv.index("--fused-loop") + 1])):
        no_graph()
    sys.exit()
graph(), no_graph(), graph(), no_graph()
g, n = [], []
for i in range(40):  # which one goes first alternates
    if i % 2:
        n.append(ms(no_graph)), g.append(ms(graph))
    else:
        g.append(ms(graph)), n.append(ms(no_graph))
print("graph ms:", [round(v, 1) for v in g])
print("no-graph ms:", [round(v, 1) for v in n])
print(f"medians: graph {statistics.median(g):.1f}, no-graph {statistics.median(n):.1f}; ratio of medians "
      f"{statistics.median(n) / statistics.median(g):.3f}, median of per-round ratios "
      f"{statistics.median(a / b for a, b in zip(n, g)):.3f}")  # fmt: skip
