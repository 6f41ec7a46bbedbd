"""Native hash-grid kernels at the cpu preset's table (2^17, gridencoder), 2 threads, medians of 21.

Forward, table gradient into a fresh tensor, into a resident one (``backward_into``, where the tree has
it) and the zeroing of that tensor, at 2^16 and 19456 ray-like samples. Run alone:
``cd /tmp && TORCH_EXTENSIONS_DIR=<private> PYTHONPATH=<tree> <repo>/.venv/bin/python hashgrid_backward.py``.
"""

from __future__ import annotations

import torch

from benchmarks import bench
from benchmarks.bench import median_ms
from ngp_ohem.field.hashgrid import HashGridEncoding, HashGridSpec
from ngp_ohem.field.native import load_native

torch.set_num_threads(2)
enc = HashGridEncoding(HashGridSpec(log2_table_size=17, convention="gridencoder"))
native, args = load_native(), enc.constants().kernel_args()
resident = torch.zeros_like(enc.table)


def row_at(n: int) -> dict[str, float]:
    x, g = bench.ray_like_points(n).contiguous(), torch.randn(n, 32)
    row = {
        "forward": median_ms(lambda: native.forward(x, enc.table, *args)),
        "backward_fresh": median_ms(lambda: native.backward(g, x, enc.table.shape[0], *args)),
        "zero_resident": median_ms(resident.zero_),
    }
    if hasattr(native, "backward_into"):
        row["backward_into"] = median_ms(lambda: native.backward_into(g, x, resident, *args))
    return row


for n in (1 << 16, 19456):
    print(n, row_at(n))
