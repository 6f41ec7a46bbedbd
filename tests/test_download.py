"""Downloader and scene registry, against a local HTTP server only (tests never touch the network)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ngp_ohem.data import download
from ngp_ohem.data.download import Archive, download_dataset
from ngp_ohem.data.registry import BLENDER_SCENES, LLFF_SCENES, dataset_of, scene_dir
from ngp_ohem.errors import DatasetError


def make_zip(extra: dict[str, bytes] | None = None) -> bytes:
    """A small nerf_synthetic-style archive: two scenes, macOS junk, incompressible payload."""
    blob = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(6000))  # 192 kB
    members = {
        "nerf_synthetic/lego/transforms_train.json": b'{"frames": []}',
        "nerf_synthetic/lego/train/r_0.png": blob,
        "nerf_synthetic/chair/transforms_train.json": b"{}",
        "__MACOSX/nerf_synthetic/lego/._r_0.png": b"junk",
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("nerf_synthetic/", b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class Served:
    """What the local server sends and what it saw."""

    data: bytes
    ranges: bool = True  # honour Range requests
    cut_at: int | None = None  # announce the full length but close the connection after this many bytes
    requests: list[dict[str, str]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        served: Served = self.server.served  # type: ignore[attr-defined]
        served.requests.append({"path": self.path, **dict(self.headers)})
        if not self.path.endswith(".zip"):
            self.send_error(404)
            return
        data, start = served.data, 0
        header = self.headers.get("Range")
        if header and served.ranges:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if served.cut_at is None else body[: served.cut_at])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    """A 127.0.0.1 server in a daemon thread; shut down after the test, or by itself after 60 s."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.served = Served(make_zip())  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60.0, httpd.shutdown)
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/nerf_synthetic.zip", httpd.served  # type: ignore[attr-defined]
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def spec(url: str, sha256: str | None = None) -> Archive:
    return Archive("nerf_synthetic.zip", (url,), sha256, "nerf_synthetic")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nerf_synthetic.zip"


def test_download_extracts_only_requested_scenes(tmp_path: Path, server) -> None:
    url, served = server
    out = download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert out == [tmp_path / "nerf_synthetic" / "lego"]
    assert (out[0] / "transforms_train.json").read_bytes() == b'{"frames": []}'
    assert (out[0] / "train" / "r_0.png").stat().st_size == 192000
    assert not (tmp_path / "nerf_synthetic" / "chair").exists() and not (tmp_path / "__MACOSX").exists()
    archive = tmp_path / "nerf_synthetic.zip"
    digest = hashlib.sha256(served.data).hexdigest()
    assert archive.read_bytes() == served.data and not (tmp_path / "nerf_synthetic.zip.part").exists()
    assert (tmp_path / "nerf_synthetic.zip.sha256").read_text().split()[0] == digest
    # present scenes are skipped; a later scene comes from the kept archive, no new request
    download_dataset("nerf_synthetic", tmp_path, ["lego", "chair"], archive=spec(url), timeout=5)
    assert (tmp_path / "nerf_synthetic" / "chair" / "transforms_train.json").is_file()
    assert len(served.requests) == 1 and served.requests[0]["User-Agent"] == "ngp-ohem"


def test_interrupted_download_resumes_with_range(tmp_path: Path, server) -> None:
    url, served = server
    served.cut_at = 70_000
    message = r"transfer ended after 70000 of \d+ bytes; re-run to resume"
    with pytest.raises(DatasetError, match=message) as err:
        download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert "nerf_synthetic/<scene>/transforms_train.json" in str(err.value)
    part = tmp_path / "nerf_synthetic.zip.part"
    assert part.read_bytes() == served.data[:70_000]
    served.cut_at = None
    download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert served.requests[-1]["Range"] == "bytes=70000-"
    assert (tmp_path / "nerf_synthetic.zip").read_bytes() == served.data and not part.exists()


def test_server_without_range_support_restarts(tmp_path: Path, server) -> None:
    url, served = server
    served.ranges = False
    (tmp_path / "nerf_synthetic.zip.part").write_bytes(b"stale bytes from another file")
    download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert (tmp_path / "nerf_synthetic.zip").read_bytes() == served.data


def test_part_longer_than_file_restarts(tmp_path: Path, server) -> None:
    url, served = server
    (tmp_path / "nerf_synthetic.zip.part").write_bytes(b"x" * (len(served.data) + 10))
    download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert (tmp_path / "nerf_synthetic.zip").read_bytes() == served.data
    assert [r.get("Range") for r in served.requests] == [f"bytes={len(served.data) + 10}-", None]


def test_checksum_mismatch_is_reported_and_deleted(tmp_path: Path, server) -> None:
    url, _ = server
    message = r"nerf_synthetic\.zip: sha256 mismatch \(expected 0+, got [0-9a-f]{64}\)"
    with pytest.raises(DatasetError, match=message):
        download_dataset("blender", tmp_path, ["lego"], archive=spec(url, sha256="0" * 64), timeout=5)
    assert not (tmp_path / "nerf_synthetic.zip").exists()
    assert not (tmp_path / "nerf_synthetic" / "lego").exists()


def test_known_checksum_accepted(tmp_path: Path, server) -> None:
    url, served = server
    digest = hashlib.sha256(served.data).hexdigest()
    download_dataset("blender", tmp_path, ["lego"], archive=spec(url, sha256=digest), timeout=5)
    assert (tmp_path / "nerf_synthetic" / "lego" / "transforms_train.json").is_file()


def test_recorded_checksum_catches_a_changed_archive(tmp_path: Path, server) -> None:
    url, _ = server
    download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    archive = tmp_path / "nerf_synthetic.zip"
    archive.write_bytes(make_zip({"nerf_synthetic/lego/extra.txt": b"changed"}))
    with pytest.raises(DatasetError, match=r"nerf_synthetic\.zip: sha256 .* differs from the one recorded"):
        download_dataset("blender", tmp_path, ["chair"], archive=spec(url), timeout=5)


def test_html_instead_of_zip(tmp_path: Path, server) -> None:
    url, served = server
    served.data = b"<html>Google Drive - quota exceeded</html>"
    with pytest.raises(DatasetError, match=r"nerf_synthetic\.zip is not a zip archive"):
        download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert not (tmp_path / "nerf_synthetic.zip").exists()


def test_corrupt_member_fails_crc(tmp_path: Path, server) -> None:
    url, served = server
    data = bytearray(served.data)
    at = data.index(b"nerf_synthetic/lego/train/r_0.png") + 200  # inside that member's stored bytes
    data[at] ^= 0xFF
    served.data = bytes(data)
    with pytest.raises(DatasetError, match=r"nerf_synthetic\.zip: member .*r_0\.png fails its CRC check"):
        download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)


def test_scene_missing_from_archive(tmp_path: Path, server) -> None:
    url, _ = server
    with pytest.raises(DatasetError, match=r"no folder nerf_synthetic/ship/ in the archive"):
        download_dataset("blender", tmp_path, ["ship"], archive=spec(url), timeout=5)


def test_unsafe_member_is_refused(tmp_path: Path, server) -> None:
    url, served = server
    served.data = make_zip({"nerf_synthetic/lego/../../evil.txt": b"x"})
    with pytest.raises(DatasetError, match="unsafe member path"):
        download_dataset("blender", tmp_path, ["lego"], archive=spec(url), timeout=5)
    assert not (tmp_path / "evil.txt").exists()


def test_offline_message_says_where_to_put_the_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        download_dataset(
            "llff",
            tmp_path / "data",
            ["fern"],
            timeout=5,
            archive=Archive("nerf_llff_data.zip", (closed_port_url(),), None, "nerf_llff_data"),
        )
    message = str(err.value)
    assert message.startswith("could not download nerf_llff_data.zip")
    assert f"{tmp_path / 'data' / 'nerf_llff_data'}/<scene>/poses_bounds.npy" in message
    assert str(tmp_path / "data" / "nerf_llff_data.zip") in message and download.RELEASE_PAGE in message


def test_http_error_tries_next_mirror(tmp_path: Path, server) -> None:
    url, served = server
    mirrors = Archive(
        "nerf_synthetic.zip", (url.replace(".zip", ".missing"), closed_port_url(), url), None, "nerf_synthetic"
    )
    download_dataset("blender", tmp_path, ["lego"], archive=mirrors, timeout=5)
    assert (tmp_path / "nerf_synthetic" / "lego").is_dir()
    assert [r["path"] for r in served.requests] == ["/nerf_synthetic.missing", "/nerf_synthetic.zip"]


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'tanks'; known: blender, llff"):
        download_dataset("tanks", tmp_path)
    with pytest.raises(DatasetError, match="unknown llff scene 'lego'"):
        download_dataset("llff", tmp_path, ["lego"])


def test_table_points_at_the_official_release() -> None:
    assert download.ARCHIVES["blender"].filename == "nerf_synthetic.zip"
    assert download.ARCHIVES["llff"].filename == "nerf_llff_data.zip"
    # The official releases: the NeRF authors' Google Drive files and Google Research's Mip-NeRF 360 bucket.
    assert {name: entry.urls for name, entry in download.ARCHIVES.items()} == {
        "blender": (
            "https://drive.usercontent.google.com/download?id=18JxhpWD-4ZmuFKLzKlAw-w5PpzZxXOcG&export=download&confirm=t",
        ),
        "llff": (
            "https://drive.usercontent.google.com/download?id=16VnMcF1KJYxN9QId6TClMsZRahHNMW5g&export=download&confirm=t",
        ),
        "mipnerf360": ("https://storage.googleapis.com/gresearch/refraw360/360_v2.zip",),
    }


def test_registry() -> None:
    assert len(BLENDER_SCENES) == 8 and len(LLFF_SCENES) == 8
    assert dataset_of("lego") == "blender" and dataset_of("fern") == "llff"
    assert scene_dir("/d", "trex") == Path("/d/nerf_llff_data/trex")
    assert scene_dir(Path("/d"), "ship") == Path("/d/nerf_synthetic/ship")
    with pytest.raises(DatasetError, match=r"unknown scene 'legoo'; known: chair, .*trex"):
        dataset_of("legoo")


def test_mipnerf360_archive_with_scenes_at_the_zip_root(tmp_path: Path, server) -> None:
    """360_v2.zip: scene folders at the top of the zip (or under 360_v2/), extracted to <root>/360_v2/<scene>."""
    url, served = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for scene in ("garden", "room"):
            zf.writestr(f"{scene}/sparse/0/cameras.bin", scene.encode())
            zf.writestr(f"{scene}/images_4/DSC0001.JPG", b"jpg")
    served.data = buf.getvalue()
    archive = Archive("360_v2.zip", (url,), None, "360_v2", download.MIPNERF360_PAGE)
    out = download_dataset("360_v2", tmp_path, ["room"], archive=archive, timeout=5)
    assert out == [tmp_path / "360_v2" / "room"]
    assert (out[0] / "sparse" / "0" / "cameras.bin").read_bytes() == b"room"
    assert not (tmp_path / "360_v2" / "garden").exists()
    download_dataset("mipnerf360", tmp_path, ["room"], archive=archive, timeout=5)  # present: no request
    assert len(served.requests) == 1
    with pytest.raises(DatasetError, match="unknown mipnerf360 scene 'fern'"):
        download_dataset("mipnerf360", tmp_path, ["fern"])


def test_mipnerf360_table_entry_and_manual_instructions(tmp_path: Path) -> None:
    entry = download.ARCHIVES["mipnerf360"]
    assert entry.filename == "360_v2.zip" and entry.top == "360_v2"
    assert entry.urls == ("https://storage.googleapis.com/gresearch/refraw360/360_v2.zip",)
    message = download.manual_instructions("mipnerf360", tmp_path)
    assert download.MIPNERF360_PAGE in message and f"{tmp_path / '360_v2'}/<scene>/sparse/0/" in message
