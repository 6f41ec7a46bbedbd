"""The parts of mining's draw at B = 2^16, b = 13000, 2 threads, medians of 21: exponential vs uniform
draws, the radix selection of the b largest keys, and the gathers. Run alone:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python select_parts.py``.
"""

import torch

from benchmarks.bench import median_ms
from ngp_ohem.mining import top_indices

torch.set_num_threads(2)
B = 65536
b = 13000
g = torch.rand(B)
gen = torch.Generator().manual_seed(0)
raw = torch.randn(B, 4)
pos = torch.randn(B, 3)
feat = torch.randn(B, 32)


e = torch.empty_like(g)
idx = top_indices(g, b)
print("exponential_", median_ms(lambda: e.exponential_(generator=gen)))
print("exponential_ no gen", median_ms(lambda: e.exponential_()))
print("rand_", median_ms(lambda: e.uniform_(generator=gen)))
print("div", median_ms(lambda: g / e))
print("top", median_ms(lambda: top_indices(g, b)))
print("gather raw", median_ms(lambda: raw[idx]), "pos", median_ms(lambda: pos[idx]))
print("gather feat", median_ms(lambda: feat[idx]))
print("index_select feat", median_ms(lambda: feat.index_select(0, idx)))
