"""Where the fused no-graph field's time goes at 2^16 samples, 2 threads, fp32, medians of 15: the encoding
alone, the fused field (all of it, density only) and torch's own MLPs on the same rows (MKL), twice.

Run alone, from outside the repository, for any tree:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python <repo>/benchmarks/adhoc/field_split.py``.
"""

from __future__ import annotations

import torch

from benchmarks import bench

torch.set_num_threads(2)
field, x, d = bench.field_workload(1 << 16)
with torch.no_grad():
    x01 = field.normalise(x).contiguous()
    enc = field.encoding(x01)
    color_in = torch.cat([torch.zeros(x.shape[0], 16), enc[:, : field.spec.geo_features]], 1)
    for _ in range(2):
        row = {
            "encoding": bench.median_ms(lambda: field.encoding(x01), 15),
            "fused_field": bench.median_ms(lambda: field(x, d), 15),
            "fused_density_only": bench.median_ms(lambda: field.density_raw(x), 15),
            "torch_density_mlp": bench.median_ms(lambda: field.density_net(enc), 15),
            "torch_colour_mlp": bench.median_ms(lambda: field.color_net(color_in), 15),
        }
        print({k: round(v, 1) for k, v in row.items()})
