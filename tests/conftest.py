"""Shared fixtures: procedural scenes in both real formats, and the optional real-data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ngp_ohem.data.procedural import make_blender_scene, make_llff_scene

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_ENV = "NGP_OHEM_REAL_DATA"


def real_data_root() -> Path | None:
    """The real-data root ($NGP_OHEM_REAL_DATA, else ../shared/data next to the repo), if it exists."""
    candidates = [Path(os.environ[REAL_DATA_ENV])] if os.environ.get(REAL_DATA_ENV) else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for root in candidates:
        if (root / "nerf_synthetic").is_dir() or (root / "nerf_llff_data").is_dir():
            return root
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of the real NeRF data (nerf_synthetic/, nerf_llff_data/); skips the test when absent."""
    root = real_data_root()
    if root is None:
        pytest.skip(
            f"real NeRF data not found: expected {REPO_ROOT.parent / 'shared' / 'data'} "
            f"or a folder named by ${REAL_DATA_ENV}"
        )
    return root


@pytest.fixture(scope="session")
def real_scene(real_data: Path) -> Callable[[str], Path]:
    """real_scene("nerf_synthetic/lego"): that real scene folder, or skip when this copy lacks it."""

    def find(relative: str) -> Path:
        path = real_data / relative
        if not path.is_dir():
            pytest.skip(f"real scene {path} not present in this data copy")
        return path

    return find


@pytest.fixture(scope="session")
def blender_scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A procedural Blender-format scene at the default size (seed 0: 40 train, 5 val, 10 test, 100 px)."""
    return make_blender_scene(tmp_path_factory.mktemp("procedural") / "blender", seed=0)


@pytest.fixture(scope="session")
def llff_scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A procedural LLFF-format scene at the default size (seed 0: 16 images, 100x75 in images_8/)."""
    return make_llff_scene(tmp_path_factory.mktemp("procedural") / "llff", seed=0)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """Trainers set torch's thread count from their config; keep one test's setting out of the next."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
