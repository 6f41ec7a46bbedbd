"""Fetch the official datasets (nerf_synthetic.zip, nerf_llff_data.zip, 360_v2.zip) on a user's machine.

The two NeRF archives come from the NeRF authors' Google Drive release folder (``RELEASE_PAGE``); Drive's
direct-download endpoint is used with ``confirm=t`` so the large-file warning page is skipped. The
Mip-NeRF 360 archive (12.5 GB, the seven scenes the HSM authors run) is the one its project page
(``MIPNERF360_PAGE``) links, on Google Cloud Storage, which honours Range requests.

* Resumable: bytes go to ``<archive>.part`` and a re-run asks the server for the rest with an HTTP
  Range request (a server that ignores Range just restarts the file from zero).
* Verified: the release publishes no checksums, so ``ARCHIVES`` stores ``sha256=None``. A fresh
  download is checked for its announced size and for zip integrity (every member's CRC); its sha256 is
  then recorded in ``<archive>.sha256`` next to it, and every later use of the archive is checked
  against that record. Where a table entry has a sha256 it is checked on every use as well.
* Only the requested scenes are extracted (via a temporary folder, so an interrupted extraction
  never leaves a half scene that looks complete); the archive is kept for later scenes.
* Offline, or when the server refuses, a DatasetError says exactly where to put the data by hand.

urllib only: no extra dependency for a once-per-machine task.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ngp_ohem.data.registry import DATASET_DIRS, SCENES
from ngp_ohem.errors import DatasetError
from ngp_ohem.names import DATASET_MARKERS

RELEASE_PAGE = "https://drive.google.com/drive/folders/128yBriW1IG_3NJ5Rp7APSTZsJqdJdfc1"
MIPNERF360_PAGE = "https://jonbarron.info/mipnerf360/"
_DRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive: file name, mirrors tried in order, sha256 if known, top folder, release page."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    top: str  # folder inside the zip (and under the data root) that holds the scene folders
    page: str = RELEASE_PAGE  # where a user fetches it by hand


ARCHIVES = {
    "blender": Archive(
        "nerf_synthetic.zip", (_DRIVE.format("18JxhpWD-4ZmuFKLzKlAw-w5PpzZxXOcG"),), None, "nerf_synthetic"
    ),
    "llff": Archive(
        "nerf_llff_data.zip", (_DRIVE.format("16VnMcF1KJYxN9QId6TClMsZRahHNMW5g"),), None, "nerf_llff_data"
    ),
    # The project page links http://storage.googleapis.com/...; the same object is served over https.
    # Scene folders sit at the top of the zip or under 360_v2/ (extract_scenes accepts both).
    "mipnerf360": Archive(
        "360_v2.zip", ("https://storage.googleapis.com/gresearch/refraw360/360_v2.zip",), None, "360_v2",
        MIPNERF360_PAGE,
    ),
}  # fmt: skip
_ALIASES = {"nerf_synthetic": "blender", "nerf_llff_data": "llff", "360_v2": "mipnerf360"}
_LAYOUT = {
    "blender": "<scene>/transforms_train.json, transforms_test.json, train/r_<i>.png, test/r_<i>.png",
    "llff": "<scene>/poses_bounds.npy and <scene>/images_8/*.png (or images_4/, images/)",
    "mipnerf360": "<scene>/sparse/0/{cameras,images,points3D}.bin and <scene>/images_4/, images_8/",
}


class _NetworkError(Exception):
    """A transfer failed for a reason a retry, another mirror or a manual download can fix."""


def manual_instructions(dataset: str, data_root: Path) -> str:
    """Where the data goes when it has to be fetched by hand."""
    archive = ARCHIVES[dataset]
    return (
        f"download {archive.filename} from {archive.page} and unzip it into {data_root}, so that each "
        f"scene is at {data_root / archive.top}/{_LAYOUT[dataset]} (or put {archive.filename} itself "
        f"at {data_root / archive.filename} and re-run)"
    )


def _total_size(resp: http.client.HTTPResponse, start: int) -> int | None:
    if resp.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            return None
        return int(match.group(2))
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(
    url: str, dest: Path, timeout: float = 30.0, progress: Callable[[int, int | None], None] | None = None
) -> None:
    """Download url to dest through dest.part, resuming a previous partial transfer with HTTP Range."""
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "ngp-ohem"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is not a prefix we can extend: start over
            part.unlink()
            return fetch(url, dest, timeout, progress)
        raise _NetworkError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _NetworkError(f"{url}: {getattr(err, 'reason', err)}") from None
    with resp:
        total = _total_size(resp, start)
        if resp.status == 206 and total is None:  # not the range we asked for
            if not start:
                raise _NetworkError(
                    f"{url}: unexpected partial response (Content-Range {resp.headers.get('Content-Range')!r})"
                )
            resp.close()
            part.unlink()  # start over without Range
            return fetch(url, dest, timeout, progress)
        if resp.status != 206:
            start = 0  # the server ignored Range and sends the whole file
        done = start
        try:
            with part.open("ab" if start else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (http.client.HTTPException, OSError) as err:
            raise _NetworkError(
                f"{url}: transfer interrupted after {done} bytes ({err}); re-run to resume from {part}"
            ) from None
    if total is not None and done != total:
        raise _NetworkError(f"{url}: transfer ended after {done} of {total} bytes; re-run to resume from {part}")
    part.replace(dest)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(path: Path, expected_sha256: str | None, fresh: bool) -> None:
    """Check a zip against the table's sha256 and the recorded one; record it after a fresh download."""
    if not zipfile.is_zipfile(path):
        if fresh:
            path.unlink()
        raise DatasetError(
            f"{path} is not a zip archive (a server may have sent an HTML page, e.g. a Google "
            f"Drive quota notice); {'it was deleted' if fresh else 'delete it and re-run'}"
        )
    actual = sha256_of(path)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        if fresh:
            path.unlink()
        raise DatasetError(
            f"{path}: sha256 mismatch (expected {expected_sha256}, got {actual})"
            f"{'; the download was deleted, re-run to fetch it again' if fresh else ''}"
        )
    record = path.with_name(path.name + ".sha256")
    if record.is_file():
        recorded = (record.read_text(encoding="utf-8").split() or [""])[0]
        if actual != recorded:
            raise DatasetError(
                f"{path}: sha256 {actual} differs from the one recorded in {record} "
                f"({recorded}); the archive is corrupt or was replaced: delete both files and "
                "re-run"
            )
        return
    if fresh:
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            path.unlink()
            raise DatasetError(
                f"{path}: corrupt zip archive ({err}); it was deleted, re-run to fetch it again"
            ) from None
        if bad is not None:
            path.unlink()
            raise DatasetError(f"{path}: member {bad} fails its CRC check; it was deleted, re-run to fetch it again")
    record.write_text(f"{actual}  {path.name}\n", encoding="utf-8")


def _scene_members(zf: zipfile.ZipFile, top: str, scene: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Members of one scene folder and their paths relative to it (top/scene/... or scene/...)."""
    out = []
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or not parts or parts[0] == "__MACOSX":
            continue
        for prefix in ((top, scene), (scene,)):
            if parts[: len(prefix)] == prefix:
                rel = parts[len(prefix) :]
                if not rel or any(p in ("..", "") for p in rel) or info.filename.startswith("/"):
                    raise DatasetError(f"unsafe member path {info.filename!r} in the archive")
                out.append((info, PurePosixPath(*rel)))
                break
    return out


def extract_scenes(path: Path, dest: Path, top: str, scenes: Sequence[str]) -> list[Path]:
    """Extract the scene folders top/<scene>/ (or <scene>/) of a zip to dest/<scene>."""
    targets = []
    try:
        with zipfile.ZipFile(path) as zf:
            for scene in scenes:
                members = _scene_members(zf, top, scene)
                if not members:
                    raise DatasetError(f"{path}: no folder {top}/{scene}/ in the archive")
                final = dest / scene
                tmp = dest / f".{scene}.partial"
                shutil.rmtree(tmp, ignore_errors=True)
                for info, rel in members:
                    target = tmp.joinpath(*rel.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                shutil.rmtree(final, ignore_errors=True)
                tmp.replace(final)
                targets.append(final)
    except (zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"{path}: corrupt zip archive ({err}); delete it and re-run") from None
    return targets


def download_dataset(
    dataset: str,
    data_root: str | Path,
    scenes: Sequence[str] | None = None,
    *,
    archive: Archive | None = None,
    timeout: float = 30.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> list[Path]:
    """Make data_root/<dataset folder>/<scene> exist for the requested scenes (default: all of the dataset).

    Scenes already present are skipped; archive overrides the ARCHIVES entry (mirrors, tests).
    Returns the scene folders.
    """
    dataset = _ALIASES.get(dataset, dataset)
    if dataset not in ARCHIVES:
        raise DatasetError(f"unknown dataset '{dataset}'; known: {', '.join(ARCHIVES)}")
    spec = archive or ARCHIVES[dataset]
    names = tuple(SCENES[dataset]) if scenes is None else tuple(scenes)
    for name in names:
        if name not in SCENES[dataset]:
            raise DatasetError(f"unknown {dataset} scene '{name}'; known: {', '.join(SCENES[dataset])}")
    root = Path(data_root)
    folder = root / DATASET_DIRS[dataset]
    todo = [n for n in names if not (folder / n / DATASET_MARKERS[dataset]).is_file()]
    if todo:
        zip_path = root / spec.filename
        fresh = not zip_path.is_file()
        if fresh:
            root.mkdir(parents=True, exist_ok=True)
            reasons = []
            for url in spec.urls:
                try:
                    fetch(url, zip_path, timeout, progress)
                    break
                except _NetworkError as err:
                    reasons.append(str(err))
            else:
                raise DatasetError(
                    f"could not download {spec.filename} ({'; '.join(reasons)}). "
                    f"To install it by hand, {manual_instructions(dataset, root)}"
                )
        verify_archive(zip_path, spec.sha256, fresh)
        extract_scenes(zip_path, folder, spec.top, todo)
    return [folder / n for n in names]
