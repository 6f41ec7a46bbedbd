"""How low the no-graph / graph-forward ratio can go at 2^16 samples (issue 12 asks <= 0.5), 2 threads.

Both passes run the same hash-grid encoding (one kernel, ngp_ohem/field/csrc/hashgrid_cpu.cpp's forward
and the fused field's encode_tile share hashgrid_simd.h), so no-graph / graph >= encoding / graph even
with MLPs that cost nothing; a faster encoding goes to both passes and raises that floor. Timed in
alternation, precision mixed (bf16 autocast where native): the encoding without and with a graph, the
fused no-graph field, the graph forward. Run alone, from outside the repository, for any tree:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python <repo>/benchmarks/adhoc/no_graph_floor.py``.
"""

from __future__ import annotations

import torch

from benchmarks import bench
from ngp_ohem.precision import Precision, network

torch.set_num_threads(2)
field, x, d = bench.field_workload(1 << 16)
with torch.no_grad():
    field.encoding.table.normal_(0, 1e-2)  # trained-size features, not the initial 1e-4 noise
mixed = network(field, Precision("mixed", torch.device("cpu")))
x01 = field.normalise(x).contiguous()


def encoding_no_graph() -> None:
    with torch.no_grad():
        field.encoding(x01)


def no_graph() -> None:
    with torch.no_grad():
        mixed(x, d)


units = {
    "encoding_no_graph": encoding_no_graph,
    "encoding_graph": lambda: field.encoding(x01),
    "fused_no_graph": no_graph,
    "graph_forward": lambda: mixed(x, d),
}
for _ in range(2):
    for unit in units.values():
        unit()
for _ in range(2):
    m = {k: v * 1e3 for k, v in bench.interleaved_medians(units, rounds=21).items()}
    print("ms:", {k: round(v, 2) for k, v in m.items()})
    print(
        f"  fused / graph {m['fused_no_graph'] / m['graph_forward']:.3f}; floor with free MLPs: encoding / graph "
        f"{m['encoding_no_graph'] / m['graph_forward']:.3f}; the fused field's MLPs, SH and conversions "
        f"{m['fused_no_graph'] - m['encoding_no_graph']:.2f} ms, the graph forward's past its encoding "
        f"{m['graph_forward'] - m['encoding_graph']:.2f} ms"
    )
