"""Atomic result files: an interrupted write leaves the previous complete file and no temp files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ngp_ohem import io
from ngp_ohem.names import TRACE_COLUMNS


def trace_rows(n: int) -> list[dict]:
    return [{c: (i if c in ("step", "seed") else f"{c}-{i}") for c in TRACE_COLUMNS} for i in range(n)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def test_write_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "trace.csv"  # parent folders are created
    io.write_csv(path, TRACE_COLUMNS, trace_rows(3))
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(TRACE_COLUMNS) and len(rows) == 3
    assert rows[2]["step"] == "2" and rows[1]["psnr"] == "psnr-1"
    assert leftovers(path.parent) == []


class DiskFull(OSError):
    pass


def test_interrupted_csv_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trace.csv"
    io.write_csv(path, TRACE_COLUMNS, trace_rows(2))
    before = path.read_bytes()

    def half_then_fail(self: csv.DictWriter, rows) -> None:
        rows = list(rows)
        self.writerow(rows[0])  # part of the new content reaches the file ...
        raise DiskFull("no space left on device")  # ... then the write dies

    monkeypatch.setattr(io.csv.DictWriter, "writerows", half_then_fail)
    with pytest.raises(DiskFull):
        io.write_csv(path, TRACE_COLUMNS, trace_rows(5))
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["trace.csv"]


def test_keyboard_interrupt_mid_write_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    io.write_json(path, {"status": "complete"})

    def interrupted(fh) -> None:
        fh.write('{"status": "runn')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, interrupted)
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert leftovers(tmp_path) == []


def test_first_write_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_dump(data, fh, **kwargs) -> None:
        fh.write("{")
        raise TypeError("not serialisable")

    monkeypatch.setattr(io.json, "dump", broken_dump)
    with pytest.raises(TypeError):
        io.write_json(tmp_path / "summary.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_readers_see_the_old_file_until_the_write_completes(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    io.write_csv(path, TRACE_COLUMNS, trace_rows(1))
    old = path.read_text()
    seen: list[str] = []

    def write(fh) -> None:
        fh.write("new,partial")
        fh.flush()
        seen.append(path.read_text())  # a concurrent reader, mid-write
        fh.write("\ncontent\n")

    io.atomic_write(path, write)
    assert seen == [old]
    assert path.read_text() == "new,partial\ncontent\n"


def test_json_torch_and_png_round_trips(tmp_path: Path) -> None:
    io.write_json(tmp_path / "s.json", {"b": 1, "a": [1.5, "x"], "p": tmp_path})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": [1.5, "x"], "b": 1, "p": str(tmp_path)}
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    io.save_torch(tmp_path / "c.pt", state)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7
    image = torch.tensor([[[0.0, 0.5, 1.0], [1.5, -0.2, 0.25]]])  # (1, 2, 3), out of range values clamp
    io.save_png(tmp_path / "r.png", image)
    with Image.open(tmp_path / "r.png") as im:
        pixels = np.asarray(im)
    assert pixels.shape == (1, 2, 3)
    assert pixels.tolist() == [[[0, 128, 255], [255, 0, 64]]]
    assert leftovers(tmp_path) == []
