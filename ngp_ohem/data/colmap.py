"""Reader (and, for procedural scenes, writer) of COLMAP sparse models: ``sparse/0/{cameras,images,points3D}.bin``.

The binary layout is COLMAP's documented one (``src/colmap/scene/reconstruction_io.cc``): little
endian, a uint64 count per file, then per camera ``id, model, width, height, params``, per image
``id, qvec (w, x, y, z), tvec, camera_id, name\\0, n_points2D x (x, y, point3D_id)``, per point
``id, xyz, rgb, error, track_length x (image_id, point2D_idx)``. The text variants (``*.txt``) are
read too.

What a scene needs from it, per registered image sorted by name: pinhole intrinsics, the OpenGL
camera-to-world pose, and the z-depth bounds of the sparse points the image observes, as LLFF's
``imgs2poses`` computes them for ``poses_bounds.npy`` (0.1 and 99.9 percentiles), so both sources
frame the same way (:mod:`ngp_ohem.data.framing`). Lens distortion parameters are ignored, as the
authors' loader and LLFF's poses do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngp_ohem.errors import DatasetError

# model id -> (name, number of params, index of fx, fy, cx, cy in params)
CAMERA_MODELS: dict[int, tuple[str, int, tuple[int, int, int, int]]] = {
    0: ("SIMPLE_PINHOLE", 3, (0, 0, 1, 2)),
    1: ("PINHOLE", 4, (0, 1, 2, 3)),
    2: ("SIMPLE_RADIAL", 4, (0, 0, 1, 2)),
    3: ("RADIAL", 5, (0, 0, 1, 2)),
    4: ("OPENCV", 8, (0, 1, 2, 3)),
}
MODEL_IDS = {name: i for i, (name, _, _) in CAMERA_MODELS.items()}
BOUND_PERCENTILES = (0.1, 99.9)
SPARSE_CANDIDATES = ("sparse/0", "colmap_sparse/0", "sparse")


@dataclass(frozen=True)
class ColmapCamera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass(frozen=True)
class ColmapCapture:
    """Registered images sorted by name: names, cameras, OpenGL poses (N, 4, 4), depth bounds (N, 2)."""

    names: list[str]
    cameras: list[ColmapCamera]
    c2w: np.ndarray
    bounds: np.ndarray
    points: np.ndarray  # (M, 3) world positions of the sparse points
    folder: Path
    extremes: np.ndarray | None = None  # (N, 2) nearest and farthest z-depth of each image's points


def find_sparse_model(scene: Path) -> Path | None:
    """The folder holding cameras/images/points3D (.bin or .txt) under a scene, or None."""
    for rel in SPARSE_CANDIDATES:
        folder = scene / rel
        if any((folder / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return folder
    return None


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise DatasetError(f"{self.path}: truncated COLMAP file (ends at byte {len(self.data)})")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def name(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DatasetError(f"{self.path}: truncated COLMAP file (unterminated image name)")
        out = self.data[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return out


def _model(path: Path, model: int) -> tuple[str, int, tuple[int, int, int, int]]:
    if model not in CAMERA_MODELS:
        known = ", ".join(name for name, _, _ in CAMERA_MODELS.values())
        raise DatasetError(f"{path}: unsupported COLMAP camera model id {model} (supported: {known})")
    return CAMERA_MODELS[model]


def _camera(path: Path, model: int, width: int, height: int, params: list[float]) -> ColmapCamera:
    fx, fy, cx, cy = (params[i] for i in _model(path, model)[2])
    if width <= 0 or height <= 0 or fx <= 0 or fy <= 0:
        raise DatasetError(f"{path}: camera with non-positive size or focal length")
    return ColmapCamera(int(width), int(height), float(fx), float(fy), float(cx), float(cy))


def _read_cameras(folder: Path) -> dict[int, ColmapCamera]:
    cams: dict[int, ColmapCamera] = {}
    if (folder / "cameras.bin").is_file():
        r = _Reader(folder / "cameras.bin")
        for _ in range(r.take("Q")[0]):
            cam_id, model, width, height = r.take("iiQQ")
            n_params = _model(r.path, model)[1]
            cams[cam_id] = _camera(r.path, model, width, height, list(r.take("d" * n_params)))
        return cams
    path = folder / "cameras.txt"
    for line in _lines(path):
        parts = line.split()
        if parts[1] not in MODEL_IDS:
            raise DatasetError(f"{path}: unsupported COLMAP camera model {parts[1]}")
        model = MODEL_IDS[parts[1]]
        cams[int(parts[0])] = _camera(path, model, int(parts[2]), int(parts[3]), [float(p) for p in parts[4:]])
    return cams


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"missing {path} (a COLMAP sparse model needs cameras, images and points3D)")
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def _read_images(folder: Path) -> list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, camera id, qvec, tvec, observed point3D ids) per registered image."""
    out = []
    if (folder / "images.bin").is_file():
        r = _Reader(folder / "images.bin")
        for _ in range(r.take("Q")[0]):
            values = r.take("i7di")
            name = r.name()
            n = r.take("Q")[0]
            obs = np.array(r.take("ddq" * n), dtype=np.float64).reshape(n, 3) if n else np.zeros((0, 3))
            ids = obs[:, 2].astype(np.int64)
            out.append((name, values[8], np.array(values[1:5]), np.array(values[5:8]), ids[ids >= 0]))
        return out
    path = folder / "images.txt"
    _lines(path)  # a clear error when missing
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    for head, pts in zip(lines[0::2], lines[1::2], strict=False):  # the points line may be empty
        if not head.strip():
            continue
        parts = head.split()
        ids = np.array([int(v) for v in pts.split()[2::3]], dtype=np.int64)
        qt = np.array([float(v) for v in parts[1:8]])
        out.append((parts[9], int(parts[8]), qt[:4], qt[4:], ids[ids >= 0]))
    return out


def _read_points(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Point ids (M,) and positions (M, 3)."""
    ids, xyz = [], []
    if (folder / "points3D.bin").is_file():
        r = _Reader(folder / "points3D.bin")
        for _ in range(r.take("Q")[0]):
            values = r.take("Q3d3Bd")
            track = r.take("Q")[0]
            r.take("ii" * track)
            ids.append(values[0])
            xyz.append(values[1:4])
    else:
        for line in _lines(folder / "points3D.txt"):
            parts = line.split()
            ids.append(int(parts[0]))
            xyz.append([float(v) for v in parts[1:4]])
    return np.array(ids, dtype=np.int64), np.array(xyz, dtype=np.float64).reshape(-1, 3)


def qvec_to_rotation(q: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def opengl_pose(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The 4x4 OpenGL camera-to-world pose of a COLMAP image (world-to-camera quaternion q, translation t)."""
    rot = qvec_to_rotation(q)
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T * np.array([1.0, -1.0, -1.0])  # OpenCV [right, down, forward] -> OpenGL
    c2w[:3, 3] = -rot.T @ t
    return c2w


def read_poses(folder: Path) -> np.ndarray:
    """(N, 4, 4) OpenGL poses of the registered images sorted by name, without reading the points (cheap)."""
    images = sorted(_read_images(folder), key=lambda item: item[0])
    if not images:
        raise DatasetError(f"{folder}: the COLMAP model has no registered images")
    return np.stack([opengl_pose(q, t) for _, _, q, t, _ in images])


def read_capture(folder: Path) -> ColmapCapture:
    """Read a sparse model folder into a :class:`ColmapCapture` (images sorted by name)."""
    cams = _read_cameras(folder)
    images = sorted(_read_images(folder), key=lambda item: item[0])
    if not images:
        raise DatasetError(f"{folder}: the COLMAP model has no registered images")
    point_ids, xyz = _read_points(folder)
    lookup = dict(zip(point_ids.tolist(), range(len(point_ids)), strict=True))
    c2w = np.tile(np.eye(4), (len(images), 1, 1))
    bounds = np.zeros((len(images), 2))
    extremes = np.zeros((len(images), 2))
    cameras = []
    for i, (name, cam_id, q, t, observed) in enumerate(images):
        if cam_id not in cams:
            raise DatasetError(f"{folder}: image {name} refers to camera {cam_id}, which cameras lacks")
        cameras.append(cams[cam_id])
        c2w[i] = opengl_pose(q, t)
        centre = c2w[i, :3, 3]
        rows = [lookup[p] for p in observed.tolist() if p in lookup]
        depth = (xyz[rows] - centre) @ -c2w[i, :3, 2] if rows else np.zeros(0)
        depth = depth[depth > 0]
        if depth.size == 0:
            raise DatasetError(f"{folder}: image {name} observes no sparse point in front of it (no depth bounds)")
        bounds[i] = np.percentile(depth, BOUND_PERCENTILES)
        extremes[i] = depth.min(), depth.max()
        if bounds[i, 1] <= bounds[i, 0]:
            bounds[i, 1] = bounds[i, 0] * (1 + 1e-6)
    return ColmapCapture([im[0] for im in images], cameras, c2w, bounds, xyz, folder, extremes)


def write_model(folder: Path, names: list[str], camera: ColmapCamera, c2w: np.ndarray, points: np.ndarray,
                observed: list[np.ndarray]) -> None:  # fmt: skip
    """Write a binary PINHOLE model: one shared camera, OpenGL poses (N, 4, 4), points (M, 3) and, per
    image, the indices of the points it observes (pixel coordinates are written as 0: unused here)."""
    folder.mkdir(parents=True, exist_ok=True)
    cam = struct.pack("<QiiQQ4d", 1, 1, MODEL_IDS["PINHOLE"], camera.width, camera.height,
                      camera.fx, camera.fy, camera.cx, camera.cy)  # fmt: skip
    (folder / "cameras.bin").write_bytes(cam)
    parts = [struct.pack("<Q", len(names))]
    for i, (name, pose) in enumerate(zip(names, c2w, strict=True)):
        rot = (pose[:3, :3] * np.array([1.0, -1.0, -1.0])).T  # world-to-camera, OpenCV
        parts.append(struct.pack("<i7di", i + 1, *rotation_to_qvec(rot), *(-rot @ pose[:3, 3]), 1))
        parts.append(name.encode() + b"\0" + struct.pack("<Q", len(observed[i])))
        parts.extend(struct.pack("<ddq", 0.0, 0.0, int(p) + 1) for p in observed[i])
    (folder / "images.bin").write_bytes(b"".join(parts))
    pts = [struct.pack("<Q", len(points))]
    pts.extend(struct.pack("<Q3d3BdQ", j + 1, *p, 128, 128, 128, 0.5, 0) for j, p in enumerate(points))
    (folder / "points3D.bin").write_bytes(b"".join(pts))


def rotation_to_qvec(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method, w >= 0)."""
    m = rot
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q if q[0] >= 0 else -q
