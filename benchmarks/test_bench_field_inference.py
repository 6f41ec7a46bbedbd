"""The no-graph field evaluation (mining's first pass, grid queries, renders) against the graph forward of
the same field on the same samples, timed in alternation in one process (issue 12).

At 2^16 samples, in fp32 and in the training precision (``mixed``: bf16 autocast where the CPU multiplies
bf16 natively; elsewhere it is fp32 and that case is skipped). Three units: ``fused`` (the default
no-graph path, csrc/field_infer_cpu.cpp), ``module`` (the module path without a graph: native encoding +
torch matmuls) and ``graph`` (autograd on). The medians go to extra_info; the check is on the median of
per-round fused / graph ratios (``bench.median_round_ratio``) against a bound per CPU class and precision.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench
from ngp_ohem.field.native import load_field_native
from ngp_ohem.precision import Precision, network

# fused / graph forward bound by (precision, CPU class: bench.VECTOR_FLAGS), the median of per-round ratios.
# Measured (benchmarks/README.md): fp32 0.52-0.78 on the AVX2 Zen 3 after its 8-lane corners and
# register-blocked MLPs; on the AVX-512 BF16 Zen 5 after the 16-lane corners fetched ahead and with freed
# memory kept in the heap, fp32 0.70-0.71 and bf16 0.60-0.64, where the no-graph module path (no fused
# kernel) reads 0.90-0.95 and 0.98-1.04. The bounds fail on a pass that lost its fused kernel, with room for
# this VM's noise; issue 12 asks bf16 <= 0.5, which is not met (benchmarks/README.md says why).
MAX_RATIO = {
    ("fp32", ("avx2",)): 0.95,
    ("fp32", ("avx2", "avx512f", "avx512_bf16")): 0.85,
    ("bfloat16", ("avx2", "avx512f", "avx512_bf16")): 0.8,
}
OTHER_CPUS_MAX_RATIO = 1.2  # elsewhere only what held before the vector kernels: never dearer than 1.2 forwards
ROUNDS = 21


@pytest.mark.parametrize("mode", ["fp32", "mixed"])
def test_no_graph_field_evaluation_is_cheaper_than_a_graph_forward(benchmark, mode):
    if load_field_native() is None:
        pytest.skip("the fused field kernel could not be built here (no compiler?)")
    precision = Precision(mode, torch.device("cpu"))
    if mode == "mixed" and precision.dtype is None:
        pytest.skip("precision mixed runs in fp32 on this CPU (no native bf16): the fp32 case covers it")
    field, x, d = bench.field_workload(1 << 16)
    with torch.no_grad():
        field.encoding.table.normal_(0, 1e-2)  # trained-size features, not the initial 1e-4 noise
    net = network(field, precision)

    def no_graph(fused: bool):
        def run() -> None:
            field.fused_inference = fused
            with torch.no_grad():
                net(x, d)
            field.fused_inference = True

        return run

    def graph() -> None:
        net(x, d)

    units = {"fused": no_graph(True), "module": no_graph(False), "graph": graph}
    medians = bench.interleaved_medians(units, rounds=5)  # also warms every path up
    ratio = bench.median_round_ratio(units["fused"], units["graph"], ROUNDS)
    benchmark.pedantic(units["fused"], rounds=5, warmup_rounds=1)
    benchmark.extra_info.update({f"{k}_ms": round(1e3 * v, 2) for k, v in medians.items()})
    benchmark.extra_info.update({"precision": precision.label, "ratio": round(ratio, 3)})
    benchmark.extra_info["module_ratio"] = round(medians["module"] / medians["graph"], 3)  # the bounds' comment
    print(f"\nno-graph / graph forward @2^16, {precision.label}: {ratio:.3f} (medians {medians} s)")
    bound = MAX_RATIO.get((precision.label, bench.this_cpu_vector_flags()), OTHER_CPUS_MAX_RATIO)
    assert ratio <= bound, f"fused no-graph / graph forward {ratio:.3f} over {bound} at 2^16 ({precision.label})"
