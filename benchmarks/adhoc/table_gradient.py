"""The hash-grid table gradient alone (``backward_into``) and the forward at 2^16 ray-like samples, the cpu
preset's table, 2 threads, medians of 21: one line, for alternating trees quickly.

Run alone, from outside the repository, for any tree:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python <repo>/benchmarks/adhoc/table_gradient.py``.
"""

from __future__ import annotations

import torch

from benchmarks import bench
from ngp_ohem.field.native import load_native

torch.set_num_threads(2)
N = 1 << 16
field, x_world, _ = bench.field_workload(N)
enc = field.encoding
with torch.no_grad():
    enc.table.normal_(0, 1e-2)  # trained-size features
x = field.normalise(x_world).contiguous()
consts, native = enc.constants(), load_native()
grad_out, grad_table = torch.randn(N, enc.spec.output_dim), torch.zeros_like(enc.table)
gradient = bench.median_ms(lambda: native.backward_into(grad_out, x, grad_table, *consts.kernel_args()), 21)
with torch.no_grad():
    forward = bench.median_ms(lambda: enc(x), 21)
print(f"table gradient {gradient:.1f} ms, forward {forward:.1f} ms")
