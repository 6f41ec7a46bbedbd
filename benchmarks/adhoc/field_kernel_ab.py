"""This tree's fused no-graph field kernel against another tree's, in one process, at 2^16, 2 threads.

The other tree's ``ngp_ohem/field/csrc`` is built under another extension name, so both kernels run on the
same field and samples, alternated (interleaved medians, bf16 where native, else fp32): all outputs, density
only, and keeping the features as mining does; the outputs must be identical. Run alone, e.g.
``git worktree add /tmp/old bae00f4 && python -m benchmarks.adhoc.field_kernel_ab /tmp/old/ngp_ohem/field/csrc``
(from the repository root).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from benchmarks import bench
from ngp_ohem.field import native
from ngp_ohem.field.ngp import _transposed_weights, bf16_autocast
from ngp_ohem.precision import Precision

torch.set_num_threads(2)
other_dir = Path(sys.argv[1]).resolve()
headers = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(other_dir.glob("*.h")))).hexdigest()[:12]
flags = [*native.EXACT_FLAGS, "-fno-math-errno", f"-I{other_dir}", f"-DOTHER_HEADERS={headers}"]
kernels = {
    "this": native.load_field_native(),
    "other": native._build("ngp_ohem_field_cpu_other", other_dir / "field_infer_cpu.cpp", flags, True, "other"),
}
field, x, d = bench.field_workload(1 << 16)
with torch.no_grad():
    field.encoding.table.normal_(0, 1e-2)  # trained-size features
with Precision("mixed", torch.device("cpu")).autocast():
    bf16 = bf16_autocast()
args = field.encoding.constants().kernel_args()
x01, table = field.normalise(x).contiguous(), field.encoding.table.detach()
weights = _transposed_weights(field.density_net), _transposed_weights(field.color_net)


def call(kernel, density_only: bool = False, keep: bool = False):
    return lambda: kernel.field_forward(x01, d, table, *args, *weights, density_only, bf16, keep, False)


for keep in (False, True):
    a, b = call(kernels["this"], keep=keep)(), call(kernels["other"], keep=keep)()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "the two kernels' outputs differ"
units = {f"{k}_{mode}": call(kern, mode == "density", mode == "keep")
         for mode in ("all", "density", "keep") for k, kern in kernels.items()}  # fmt: skip
for _ in range(2):
    m = bench.interleaved_medians(units, rounds=21)
    print(f"{'bf16' if bf16 else 'fp32'} ms:", {k: round(v * 1e3, 2) for k, v in m.items()})
