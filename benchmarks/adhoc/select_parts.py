"""The parts of mining's draw at B = 2^16, b = 13000, 2 threads, medians of 21: exponential vs uniform
draws, the radix selection of the b largest keys, and the gathers. Run alone:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python select_parts.py``.
"""

import time

import torch

from ngp_ohem.mining import top_indices

torch.set_num_threads(2)
B = 65536
b = 13000
g = torch.rand(B)
gen = torch.Generator().manual_seed(0)
raw = torch.randn(B, 4)
pos = torch.randn(B, 3)
feat = torch.randn(B, 32)


def med(f, r=21):
    f()
    ts = []
    for _ in range(r):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    return round(sorted(ts)[r // 2] * 1e3, 3)


e = torch.empty_like(g)
idx = top_indices(g, b)
print("exponential_", med(lambda: e.exponential_(generator=gen)))
print("exponential_ no gen", med(lambda: e.exponential_()))
print("rand_", med(lambda: e.uniform_(generator=gen)))
print("div", med(lambda: g / e))
print("top", med(lambda: top_indices(g, b)))
print("gather raw", med(lambda: raw[idx]), "pos", med(lambda: pos[idx]), "feat", med(lambda: feat[idx]))
print("index_select feat", med(lambda: feat.index_select(0, idx)))
