"""Hash-grid kernels built for baseline x86-64 vs -march=native: bit-identical outputs, median times.

.venv/bin/python benchmarks/adhoc/kernel_build_flags.py   (alone on the machine)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from torch.utils.cpp_extension import load

from ngp_ohem.config import build_config
from ngp_ohem.field import build_field, native
from ngp_ohem.run.build import field_spec


def build(name: str, flags: list[str]):
    directory = native.build_directory(name, True)
    cflags = [*flags, f"-DNGP_OHEM_HEADERS={native.headers_tag()}"]
    return load(name=name, sources=[str(native.SOURCE)], build_directory=str(directory), extra_cflags=cflags,
                extra_ldflags=["-fopenmp"])  # fmt: skip


base = build("hg_flags_x86_64", ["-O3", "-fopenmp", "-ffp-contract=off"])
nat = build("hg_flags_native", native.EXACT_FLAGS)
cfg = build_config("cpu", {"device": "cpu"})
field = build_field(field_spec(cfg, 1.5), 1.5, "torch", torch.device("cpu"))
enc = field.encoding
c = enc.constants()
n = 1 << 16
x01 = torch.rand(n, 3)
table = enc.table.detach()


def fwd(m):
    return m.forward(x01, table, c.scale, c.side, c.dense, c.offset, c.mask)


g = torch.randn(n, table.shape[0] and fwd(base).shape[1])


def bwd(m):
    return m.backward(g, x01, table.shape[0], c.scale, c.side, c.dense, c.offset, c.mask)


assert torch.equal(fwd(base), fwd(nat)) and torch.equal(bwd(base), bwd(nat))
cases = {
    "forward, x86-64 build": lambda: fwd(base),
    "forward, -march=native": lambda: fwd(nat),
    "table gradient, x86-64 build": lambda: bwd(base),
    "table gradient, -march=native": lambda: bwd(nat),
}
times: dict[str, list[float]] = {k: [] for k in cases}
for _ in range(9):
    for name, fn in cases.items():
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
for name, values in times.items():
    print(f"{name}: {sorted(values)[4] * 1000:.1f} ms")
