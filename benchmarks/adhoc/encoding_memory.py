"""Whether the hash-grid encoding waits on memory: forward, table gradient and the fused no-graph field at
2^16 samples (ray-like and uniform), then the forward at table sizes 2^10 to 2^19; medians of 11, 2 threads.

Run alone, from outside the repository, for any tree:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python <repo>/benchmarks/adhoc/encoding_memory.py``.
"""

from __future__ import annotations

import dataclasses

import torch

from benchmarks import bench
from ngp_ohem.field.hashgrid import HashGridEncoding
from ngp_ohem.field.native import load_native

torch.set_num_threads(2)
N = 1 << 16
ROUNDS = 11

field, x_world, d = bench.field_workload(N)
enc = field.encoding
with torch.no_grad():
    enc.table.normal_(0, 1e-2)  # trained-size features
ray_like, uniform = field.normalise(x_world).contiguous(), torch.rand(N, 3)
consts, native = enc.constants(), load_native()
grad_out, grad_table = torch.randn(N, enc.spec.output_dim), torch.zeros_like(enc.table)
row: dict[str, float] = {}
with torch.no_grad():
    for name, x in (("ray", ray_like), ("uniform", uniform)):
        row[f"forward_{name}"] = bench.median_ms(lambda x=x: enc(x), ROUNDS)
        row[f"gradient_{name}"] = bench.median_ms(
            lambda x=x: native.backward_into(grad_out, x, grad_table, *consts.kernel_args()), ROUNDS
        )
    row["fused_field"] = bench.median_ms(lambda: field(x_world, d), ROUNDS)
    row["fused_density"] = bench.median_ms(lambda: field.density_raw(x_world), ROUNDS)
print("ms at 2^16:", {k: round(v, 1) for k, v in row.items()})
for log2 in (10, 14, 17, 19):
    sized = HashGridEncoding(dataclasses.replace(bench.ENCODING_SPEC, log2_table_size=log2))
    with torch.no_grad():
        sized.table.normal_(0, 1e-2)
        ms = bench.median_ms(lambda sized=sized: sized(ray_like), ROUNDS)
    print(f"table 2^{log2} ({sized.table.numel() * 4 / 2**20:.1f} MiB): forward {ms:.1f} ms")
