"""What a new matrix shape costs on the CPU: oneDNN compiles a bf16 matmul kernel per shape.

Times (2 threads, medians) a weight-gradient and a forward matmul at a repeated and at a changing row
count, then a bias-free 32-64-16 MLP's forward+backward under autocast at changing row counts, plain
and with the rows rounded up to a multiple of 2048 (``ngp_ohem.field.ngp.mlp_rows`` rounds to a
sixteenth of the count's power of two). Run alone:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python mm_shapes.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

torch.set_num_threads(2)
x0 = torch.randn(70000, 32, dtype=torch.bfloat16)
g0 = torch.randn(70000, 64, dtype=torch.bfloat16)
w = g0[:64, :32].contiguous()
for vary in (False, True):
    grad_w, fwd = [], []
    for i in range(30):
        n = 18000 + (i * 37 if vary else 0)
        x, g = x0[:n].contiguous(), g0[:n].contiguous()
        start = time.perf_counter()
        g.t() @ x
        grad_w.append(time.perf_counter() - start)
        start = time.perf_counter()
        x @ w.t()
        fwd.append(time.perf_counter() - start)
    label = "changing" if vary else "repeated"
    print(f"{label} rows: weight gradient {statistics.median(grad_w) * 1e3:.2f} ms, "
          f"forward {statistics.median(fwd) * 1e3:.2f} ms")  # fmt: skip

net = torch.nn.Sequential(
    torch.nn.Linear(32, 64, bias=False), torch.nn.ReLU(), torch.nn.Linear(64, 16, bias=False)
)  # fmt: skip
xf = torch.randn(70000, 32)


def mlp_step(n: int, bucket: bool, bf16: bool) -> float:
    x = xf[:n].clone().requires_grad_(True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if bucket:
            m = -(-n // 2048) * 2048
            y = net(torch.nn.functional.pad(x, (0, 0, 0, m - n)))[:n]
        else:
            y = net(x)
    y.float().sum().backward()
    return time.perf_counter() - start


for bf16 in (False, True):
    for bucket in (False, True):
        for base in (18000, 60000):
            for _ in range(3):
                mlp_step(base, bucket, bf16)
            ms = statistics.median(mlp_step(base + 37 * i, bucket, bf16) for i in range(1, 30)) * 1e3
            kind = f"{'bf16' if bf16 else 'fp32'} {'rounded' if bucket else 'plain'}"
            print(f"MLP fwd+bwd {kind} ~{base} rows: {ms:.2f} ms")
