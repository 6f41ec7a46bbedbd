"""Where a no-graph field pass goes, and what bf16 autocast buys (2^16 random samples, cpu preset field).

    .venv/bin/python benchmarks/adhoc/no_graph_precision.py   (alone on the machine)

Prints the max |raw| difference of bf16 against fp32, median times of 9 alternated runs per case, and a
torch.profiler table of 5 fp32 no-graph forwards.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ngp_ohem.config import build_config
from ngp_ohem.field import build_field
from ngp_ohem.field.ngp import spherical_harmonics_deg4
from ngp_ohem.run.build import field_spec, prepare_kernels

torch.manual_seed(0)
field = build_field(field_spec(build_config("cpu", {"device": "cpu"}), 1.5), 1.5, "torch", torch.device("cpu"))
prepare_kernels(field)
n = 1 << 16
x = torch.rand(n, 3) * 3 - 1.5
d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
encoded = field.encoding(field.normalise(x)).detach()
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def alternated_ms(fn, reps: int = 9) -> tuple[float, float]:
    """Median ms of fn(False) and fn(True), run alternately so that drift hits both alike."""
    fn(False)
    fn(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(reps):
        for bf16 in (False, True):
            start = time.perf_counter()
            fn(bf16)
            times[bf16].append(time.perf_counter() - start)
    return tuple(sorted(times[k])[reps // 2] * 1000 for k in (False, True))


def no_graph(bf16: bool) -> None:
    with torch.no_grad(), torch.autocast(**BF16, enabled=bf16):
        field(x, d)


def mlps(bf16: bool) -> None:
    with torch.no_grad(), torch.autocast(**BF16, enabled=bf16):
        h = field.density_net(encoded)
        field.color_net(torch.cat([spherical_harmonics_deg4(d), h[:, 1:]], dim=-1))


def graph(bf16: bool) -> None:
    with torch.autocast(**BF16, enabled=bf16):
        out = field(x, d)
    out.float().sum().backward()


with torch.no_grad():
    ref = field(x, d)
    with torch.autocast(**BF16):
        low = field(x, d).float()
print(f"max |raw| bf16 - fp32: {(ref - low).abs().max().item():.2e} (raw scale {ref.abs().max().item():.3f})")
for name, fn in (("no-graph forward", no_graph), ("its MLPs alone", mlps), ("graph forward + backward", graph)):
    fp32, bf16 = alternated_ms(fn)
    print(f"{name}: fp32 {fp32:.1f} ms, bf16 {bf16:.1f} ms")
with torch.profiler.profile() as prof:
    for _ in range(5):
        no_graph(False)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
