"""Native ray marching on a lego-like step: 3000 rays from cameras at radius 4 through the [-1, 1]^3 box,
1024 steps across its diagonal, an occupancy grid (128^3) occupied in a ball of radius 0.5 (~6 % of the
cells), 2 threads, medians of 21. Prints ms per march for the vector walk and the scalar walk (trees
before ``use_simd`` existed print one figure: their only walk). Run alone:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python <repo>/benchmarks/adhoc/march_walk.py``.
"""

import inspect

import torch

from benchmarks.bench import median_ms
from ngp_ohem.render.march import march_rays
from ngp_ohem.render.occupancy import OccupancyGrid

torch.set_num_threads(2)
R, STEPS = 3000, 1024
g = torch.Generator().manual_seed(0)
origins = torch.nn.functional.normalize(torch.randn(R, 3, generator=g), dim=-1) * 4.0
dirs = torch.nn.functional.normalize((torch.rand(R, 3, generator=g) - 0.5) * 1.2 - origins, dim=-1)
jitter = torch.rand(R, generator=g)
grid = OccupancyGrid(1.0, 128, 0.01)
centres = (torch.stack(torch.meshgrid(*[torch.arange(128)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / 64 - 1
grid.occupied = centres.norm(dim=-1) < 0.5


has_simd = "use_simd" in inspect.signature(march_rays).parameters
n = march_rays(origins, dirs, grid, 0.05, STEPS, jitter=jitter).n_samples
print(f"{R} rays, {n} samples kept, {float(grid.occupied.float().mean()):.3f} of the cells occupied")


def march(**kwargs: bool) -> None:
    march_rays(origins, dirs, grid, 0.05, STEPS, jitter=jitter, **kwargs)


if has_simd:
    print("vector walk ms", median_ms(lambda: march(use_simd=True)))
    print("scalar walk ms", median_ms(lambda: march(use_simd=False)))
else:
    print("walk ms", median_ms(march))
