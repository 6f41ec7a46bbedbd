"""Small procedural scenes written in the real Blender, LLFF and Mip-NeRF 360 formats, by exact ray casting.

They let the tests and the embedded default go through the same loaders as real data, with known
geometry: spheres and axis-aligned boxes (plus a back plane for LLFF, a ground slab and a far
background for 360) with position-dependent textures and view-independent Lambertian shading,
anti-aliased by 2x2 supersampling. Everything is a pure function of the seed (numpy only), so the
same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ngp_ohem.data.colmap import ColmapCamera, write_model
from ngp_ohem.errors import ConfigError, DatasetError

CAMERA_ANGLE_X = 0.69
BLENDER_RADIUS = 4.0
LLFF_FACTOR = 8  # images_8/ is written; hwf in poses_bounds.npy declares 8x its resolution
MIPNERF360_FACTORS = (4, 8)  # images_4/ and images_8/ are written; COLMAP declares 8x images_8/
LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
SUPERSAMPLE = 2


@dataclass(frozen=True)
class Primitive:
    """A textured shape: sphere (size[0] = radius), axis-aligned box (size = half extents) or the plane
    z = center[2] facing +z."""

    kind: str
    center: np.ndarray
    size: np.ndarray
    colors: np.ndarray  # (2, 3) the two texture colours
    pattern: str  # "checker" or "stripes"
    freq: float


def _look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world matrix at pos looking at target (camera -z towards the target)."""
    z = pos - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = pos
    return c2w


def camera_rays(c2w: np.ndarray, width: int, height: int, focal: float, ss: int = SUPERSAMPLE):
    """Origins and unit directions (M, 3) of an ss x ss supersampled pinhole image, rows top to bottom."""
    u = (np.arange(width * ss) + 0.5) / ss
    v = (np.arange(height * ss) + 0.5) / ss
    uu, vv = np.meshgrid(u, v)
    d = np.stack([(uu - 0.5 * width) / focal, -(vv - 0.5 * height) / focal, -np.ones_like(uu)], -1)
    d = d.reshape(-1, 3) @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], d.shape), d


def _hit(prim: Primitive, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter of the first hit in front of the origin (inf on a miss) and the surface normals."""
    eps = 1e-6
    if prim.kind == "sphere":
        oc = o - prim.center
        b = np.einsum("ij,ij->i", oc, d)
        disc = b * b - (np.einsum("ij,ij->i", oc, oc) - prim.size[0] ** 2)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        t = np.where((disc >= 0) & (t > eps), t, np.inf)
        normal = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - prim.center) / prim.size[0]
        return t, normal
    if prim.kind == "box":
        safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (prim.center - prim.size - o) / safe
        t2 = (prim.center + prim.size - o) / safe
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin, tmax = near.max(axis=1), far.min(axis=1)
        t = np.where((tmax >= tmin) & (tmin > eps), tmin, np.inf)
        axis = near.argmax(axis=1)
        normal = np.zeros_like(d)
        normal[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
        return t, normal
    if prim.kind == "plane":
        dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
        t = (prim.center[2] - o[:, 2]) / dz
        t = np.where(t > eps, t, np.inf)
        return t, np.broadcast_to(np.array([0.0, 0.0, 1.0]), d.shape)
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def trace(prims: list[Primitive], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit over all primitives: t (inf on a miss), primitive index (-1 on a miss), normal."""
    t = np.full(len(d), np.inf)
    index = np.full(len(d), -1)
    normal = np.zeros_like(d)
    for i, prim in enumerate(prims):
        ti, ni = _hit(prim, o, d)
        closer = ti < t
        t, index = np.where(closer, ti, t), np.where(closer, i, index)
        normal[closer] = ni[closer]
    return t, index, normal


def _shade(prims: list[Primitive], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour (M, 3), coverage (M,) and hit distance (M,) of rays: texture x Lambert, black on a miss."""
    t, index, normal = trace(prims, o, d)
    hit = index >= 0
    p = o + np.where(hit, t, 0.0)[:, None] * d
    rgb = np.zeros_like(d)
    for i, prim in enumerate(prims):
        m = index == i
        if not m.any():
            continue
        q = (p[m] - prim.center) * prim.freq
        if prim.pattern == "checker":
            mix = (np.floor(q).sum(axis=1) % 2.0)[:, None]
        else:
            mix = (0.5 + 0.5 * np.sin(2.0 * math.pi * (q[:, 0] + 0.5 * q[:, 1] + 0.25 * q[:, 2])))[:, None]
        base = prim.colors[0] * (1.0 - mix) + prim.colors[1] * mix
        lambert = 0.35 + 0.65 * np.clip(normal[m] @ LIGHT, 0.0, None)
        rgb[m] = base * lambert[:, None]
    return np.clip(rgb, 0.0, 1.0), hit.astype(np.float64), t


def _downsample(x: np.ndarray, width: int, height: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    return x.reshape(height, ss, width, ss, -1).mean(axis=(1, 3))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _random_primitive(rng: np.random.Generator, kind: str, center: np.ndarray, size: np.ndarray) -> Primitive:
    return Primitive(
        kind=kind,
        center=center,
        size=size,
        colors=rng.uniform(0.1, 0.95, (2, 3)),
        pattern=str(rng.choice(["checker", "stripes"])),
        freq=float(rng.uniform(2.0, 4.0)),
    )


def blender_geometry(seed: int = 0) -> list[Primitive]:
    """The object of a procedural Blender scene: a central sphere, a base slab, a box and a sphere, all
    inside [-0.95, 0.95]^3 (so within radius 1.65 of the origin, which corner rays never reach)."""
    rng = np.random.default_rng([seed, 0])
    r0 = rng.uniform(0.45, 0.6)
    prims = [_random_primitive(rng, "sphere", rng.uniform(-0.1, 0.1, 3), np.array([r0, r0, r0]))]
    slab = np.array([rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8), rng.uniform(0.06, 0.12)])
    slab_center = np.array([*rng.uniform(-0.1, 0.1, 2), rng.uniform(-0.8, -0.65)])
    prims.append(_random_primitive(rng, "box", slab_center, slab))
    half = rng.uniform(0.15, 0.35, 3)
    prims.append(_random_primitive(rng, "box", rng.uniform(-0.95 + half, 0.95 - half), half))
    r = rng.uniform(0.2, 0.35)
    prims.append(_random_primitive(rng, "sphere", rng.uniform(-0.95 + r, 0.95 - r, 3), np.array([r, r, r])))
    return prims


def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _clear(folder: Path, pattern: str) -> None:
    """Remove stale frames a previous, larger scene left behind (only files this module writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(pattern):
        old.unlink()


def make_blender_scene(
    out_dir: str | Path, seed: int = 0, size: int = 100, n_train: int = 40, n_test: int = 10, n_val: int = 5
) -> Path:
    """Write a Blender-format scene (transforms_{train,val,test}.json, {train,val,test}/r_<i>.png RGBA).

    Cameras sit on the upper hemisphere (elevation 10-80 degrees, z up) at radius 4 looking at the
    origin, camera_angle_x = 0.69; the alpha channel is the exact 2x2-supersampled coverage.
    """
    size = _check_size("size", size, 4)
    counts = {
        "train": _check_size("n_train", n_train, 1),
        "val": _check_size("n_val", n_val, 0),
        "test": _check_size("n_test", n_test, 1),
    }
    out = Path(out_dir)
    prims = blender_geometry(seed)
    rng = np.random.default_rng([seed, 1])
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    for split, count in counts.items():
        _clear(out / split, "r_*.png")
        frames = []
        for i in range(count):
            az, el = rng.uniform(0.0, 2.0 * math.pi), math.radians(rng.uniform(10.0, 80.0))
            pos = BLENDER_RADIUS * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
            c2w = _look_at(pos, np.zeros(3), np.array([0.0, 0.0, 1.0]))
            rgb, alpha, _ = _shade(prims, *camera_rays(c2w, size, size, focal))
            premult = _downsample(np.concatenate([rgb * alpha[:, None], alpha[:, None]], axis=1), size, size)
            a = premult[..., 3:4]
            straight = np.where(a > 0, premult[..., :3] / np.where(a > 0, a, 1.0), 0.0)
            rgba = _to_uint8(np.concatenate([straight, a], -1))
            Image.fromarray(rgba, "RGBA").save(out / split / f"r_{i}.png")
            frames.append(
                {
                    "file_path": f"./{split}/r_{i}",
                    "rotation": 0.0,
                    "transform_matrix": [[float(x) for x in row] for row in c2w],
                }
            )
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return out


LLFF_DEPTHS = ("standard", "deep")


def llff_geometry(seed: int = 0, depth: str = "standard") -> list[Primitive]:
    """A forward-facing scene in its canonical frame (cameras near z = 0 looking down -z).

    ``standard`` (fern-like, far/near ~3): a textured back plane at depth 7.5-9 and objects at depths
    ~3, ~5 and ~6. ``deep`` (flower/horns-like, far/near ~15): a foreground sphere at depth ~1.8, a box
    at ~3.5, a large sphere at ~8 and the back plane at 21-24, so the framing must hold a near
    foreground and a far background in one box.
    """
    if depth not in LLFF_DEPTHS:
        raise DatasetError(f"unknown LLFF depth profile '{depth}'; known: {', '.join(LLFF_DEPTHS)}")
    rng = np.random.default_rng([seed, 2] if depth == "standard" else [seed, 2, 1])
    if depth == "deep":
        plane = _random_primitive(rng, "plane", np.array([0.0, 0.0, -rng.uniform(21.0, 24.0)]), np.ones(3))
        plane = replace(plane, freq=plane.freq / 12.0)  # pattern cells of ~8 px at that depth
        return [
            plane,
            _random_primitive(
                rng, "sphere", np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), -rng.uniform(1.7, 1.9)]),
                np.full(3, rng.uniform(0.28, 0.34)),
            ),
            _random_primitive(
                rng, "box", np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.5, 0.5), -rng.uniform(3.2, 3.8)]),
                rng.uniform(0.3, 0.5, 3),
            ),
            _random_primitive(
                rng, "sphere", np.array([rng.uniform(-3.0, 3.0), rng.uniform(-1.5, 1.5), -rng.uniform(7.5, 8.5)]),
                np.full(3, rng.uniform(1.5, 2.0)),
            ),
        ]  # fmt: skip
    plane = _random_primitive(rng, "plane", np.array([0.0, 0.0, -rng.uniform(7.5, 9.0)]), np.ones(3))
    plane = replace(plane, freq=plane.freq / 4.0)  # ~10 px per world unit at that depth: keep it resolvable
    r1, r2 = rng.uniform(0.5, 0.7), rng.uniform(0.8, 1.1)
    return [
        plane,
        _random_primitive(
            rng,
            "sphere",
            np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.5), -rng.uniform(2.6, 3.2)]),
            np.full(3, r1),
        ),
        _random_primitive(
            rng,
            "box",
            np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.8, 0.8), -rng.uniform(4.5, 5.5)]),
            rng.uniform(0.5, 0.9, 3),
        ),
        _random_primitive(
            rng,
            "sphere",
            np.array([rng.uniform(-2.0, 2.0), rng.uniform(-1.0, 1.0), -rng.uniform(5.5, 6.3)]),
            np.full(3, r2),
        ),
    ]


def llff_cameras(seed: int, n_images: int) -> np.ndarray:
    """(N, 4, 4) canonical OpenGL poses on a jittered planar grid, each looking near (0, 0, -5)."""
    rng = np.random.default_rng([seed, 3])
    cols = math.ceil(math.sqrt(n_images))
    rows = math.ceil(n_images / cols)
    poses = []
    for i in range(n_images):
        gx = -0.6 + 1.2 * (i % cols) / max(cols - 1, 1)
        gy = 0.4 - 0.8 * (i // cols) / max(rows - 1, 1)
        pos = np.array([gx, gy, 0.0]) + rng.normal(0.0, [0.04, 0.04, 0.03])
        target = np.array([0.0, 0.0, -5.0]) + rng.normal(0.0, [0.3, 0.2, 0.0])
        poses.append(_look_at(pos, target, np.array([0.0, 1.0, 0.0])))
    return np.stack(poses)


def _random_similarity(rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, rotation and translation of the arbitrary world frame a real (COLMAP) capture has."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return float(rng.uniform(0.5, 2.0)), rot, rng.uniform(-3.0, 3.0, 3)


def make_llff_scene(
    out_dir: str | Path, seed: int = 0, width: int = 100, height: int = 75, n_images: int = 16,
    depth: str = "standard", sparse: bool = False,
) -> Path:  # fmt: skip
    """Write an LLFF-format scene: poses_bounds.npy and images_8/IMG_<i>.png (RGB).

    ``depth`` picks the geometry (see :func:`llff_geometry`). ``sparse`` also writes the COLMAP model
    ``sparse/0/`` that the real release ships (PINHOLE camera, a point cloud of visible surface points
    in the same world frame), which the loader then prefers.

    Only images_8/ is written; hwf declares the 8x "full" resolution, as in the real release. The
    per-image near/far bounds are the exact min/max z-depth of the visible surface, and the whole
    capture is placed in a random similarity frame (as COLMAP output is) so the loader's
    normalisation is exercised.
    """
    width, height = _check_size("width", width, 4), _check_size("height", height, 4)
    n_images = _check_size("n_images", n_images, 1)
    out = Path(out_dir)
    prims = llff_geometry(seed, depth)
    poses = llff_cameras(seed, n_images)
    scale, rot, trans = _random_similarity(np.random.default_rng([seed, 4]))
    focal = 0.85 * width
    image_dir = out / f"images_{LLFF_FACTOR}"
    _clear(image_dir, "IMG_*.png")
    rows, surface, observed = [], [], []
    for i, c2w in enumerate(poses):
        o, d = camera_rays(c2w, width, height, focal)
        rgb, _, t = _shade(prims, o, d)
        if sparse:  # every 97th visible surface point stands in for COLMAP's sparse features
            hit = np.flatnonzero(np.isfinite(t))[::97]
            start = sum(len(x) for x in surface)
            surface.append(o[hit] + t[hit, None] * d[hit])
            observed.append(np.arange(start, start + len(hit)))
        depth = t * (d @ -c2w[:3, 2])  # z-depth along the viewing axis, as LLFF's bounds are
        image = _to_uint8(_downsample(rgb, width, height))
        Image.fromarray(image, "RGB").save(image_dir / f"IMG_{i:04d}.png")
        world_rot = rot @ c2w[:3, :3]
        llff = np.stack(
            [
                -world_rot[:, 1],
                world_rot[:, 0],
                world_rot[:, 2],
                scale * rot @ c2w[:3, 3] + trans,
                LLFF_FACTOR * np.array([height, width, focal]),
            ],
            axis=1,
        )
        depth = depth[np.isfinite(depth)]
        rows.append(np.concatenate([llff.ravel(), scale * np.array([depth.min(), depth.max()])]))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "poses_bounds.npy", np.stack(rows).astype(np.float64))
    if sparse:
        world = np.tile(np.eye(4), (n_images, 1, 1))
        world[:, :3, :3] = rot @ poses[:, :3, :3]
        world[:, :3, 3] = scale * poses[:, :3, 3] @ rot.T + trans
        points = scale * np.concatenate(surface) @ rot.T + trans
        camera = ColmapCamera(LLFF_FACTOR * width, LLFF_FACTOR * height, *(LLFF_FACTOR * np.array([focal, focal])),
                              LLFF_FACTOR * 0.5 * width, LLFF_FACTOR * 0.5 * height)  # fmt: skip
        names = [f"IMG_{i:04d}.JPG" for i in range(n_images)]  # as the release: .JPG names, .png in images_8/
        write_model(out / "sparse" / "0", names, camera, world, points, observed)
    return out


MIPNERF360_RING = (3.8, 4.2)  # camera distance from the object's axis, canonical units
MIPNERF360_HEIGHT = (0.8, 1.6)  # camera height above the object centre
MIPNERF360_FAR = 45.0  # distance of the farthest background sphere: beyond bound 8, inside bound 16


def mipnerf360_geometry(seed: int = 0) -> list[Primitive]:
    """An unbounded 360 scene in its canonical frame (z up, object at the origin, cameras at radius ~4).

    A central sphere, a box and a small sphere on a ground slab (top at z = -0.5, 36 x 36 wide), three
    background spheres 12-14 away, and one large sphere ``MIPNERF360_FAR`` away; above the horizon the
    sky is black. Framed as the authors frame 360 captures (cameras in the unit ball), the near
    background lands ~3 units out and the far sphere ~11, so bound 8 clips it and bound 16 holds it.
    """
    rng = np.random.default_rng([seed, 5])
    ground = _random_primitive(rng, "box", np.array([0.0, 0.0, -0.55]), np.array([18.0, 18.0, 0.05]))
    ground = replace(ground, freq=float(rng.uniform(1.0, 1.5)))
    r0 = rng.uniform(0.4, 0.5)
    prims = [ground, _random_primitive(rng, "sphere", np.array([*rng.uniform(-0.1, 0.1, 2), 0.0]), np.full(3, r0))]
    half = rng.uniform(0.2, 0.3, 3)
    az = rng.uniform(0.0, 2.0 * math.pi)
    box_centre = np.array([0.8 * math.cos(az), 0.8 * math.sin(az), -0.5 + half[2]])
    prims.append(_random_primitive(rng, "box", box_centre, half))
    r = rng.uniform(0.15, 0.25)
    az += rng.uniform(2.0, 4.0)
    prims.append(_random_primitive(rng, "sphere", np.array([0.9 * math.cos(az), 0.9 * math.sin(az), -0.5 + r]),
                                   np.full(3, r)))  # fmt: skip
    for k in range(3):
        az = 2.0 * math.pi * (k + rng.uniform(0.2, 0.8)) / 3.0
        dist, radius = rng.uniform(12.0, 14.0), rng.uniform(2.0, 3.0)
        centre = np.array([dist * math.cos(az), dist * math.sin(az), rng.uniform(0.5, 2.0)])
        prims.append(replace(_random_primitive(rng, "sphere", centre, np.full(3, radius)), freq=0.5))
    az = rng.uniform(0.0, 2.0 * math.pi)
    centre = np.array([MIPNERF360_FAR * math.cos(az), MIPNERF360_FAR * math.sin(az), 6.0])
    prims.append(replace(_random_primitive(rng, "sphere", centre, np.full(3, 8.0)), freq=0.15))
    return prims


def mipnerf360_cameras(seed: int, n_images: int) -> np.ndarray:
    """(N, 4, 4) canonical OpenGL poses on a jittered ring around the object, each looking near the origin."""
    rng = np.random.default_rng([seed, 6])
    poses = []
    for i in range(n_images):
        az = 2.0 * math.pi * (i + rng.uniform(-0.2, 0.2)) / n_images
        dist, height = rng.uniform(*MIPNERF360_RING), rng.uniform(*MIPNERF360_HEIGHT)
        pos = np.array([dist * math.cos(az), dist * math.sin(az), height])
        poses.append(_look_at(pos, rng.normal(0.0, 0.1, 3), np.array([0.0, 0.0, 1.0])))
    return np.stack(poses)


def opengl_to_llff(c2w: np.ndarray) -> np.ndarray:
    """(3, 4) [down, right, back, t] of an OpenGL [right, up, back, t] camera-to-world matrix."""
    return np.stack([-c2w[:3, 1], c2w[:3, 0], c2w[:3, 2], c2w[:3, 3]], axis=1)


def make_mipnerf360_scene(
    out_dir: str | Path, seed: int = 0, width: int = 48, height: int = 32, n_images: int = 24
) -> Path:
    """Write a Mip-NeRF 360-format scene: ``sparse/0/`` (COLMAP), ``images_4/``, ``images_8/`` and
    ``poses_bounds.npy``, as the release has them.

    width x height is the images_8/ size; images_4/ is rendered at twice it and images_8/ is its 2x2
    box average; the COLMAP camera declares 8x images_8/ (the "full" resolution). Images are PNG under
    the COLMAP names' stems (the release's are JPG). The COLMAP image ids are in a shuffled order, so a
    loader must sort by name; the capture sits in a random similarity frame, as COLMAP output does.
    The sparse points are every 97th visible surface point; poses_bounds.npy holds the exact min/max
    z-depths of the visible surface.
    """
    width, height = _check_size("width", width, 4), _check_size("height", height, 4)
    n_images = _check_size("n_images", n_images, 2)
    out = Path(out_dir)
    prims = mipnerf360_geometry(seed)
    poses = mipnerf360_cameras(seed, n_images)
    scale, rot, trans = _random_similarity(np.random.default_rng([seed, 7]))
    fine, coarse = MIPNERF360_FACTORS
    w4, h4 = width * coarse // fine, height * coarse // fine
    focal4 = 0.7 * w4
    for factor in MIPNERF360_FACTORS:
        _clear(out / f"images_{factor}", "DSC*.png")
    names = [f"DSC{i:05d}.JPG" for i in range(n_images)]
    rows, surface, observed = [], [], []
    for i, c2w in enumerate(poses):
        o, d = camera_rays(c2w, w4, h4, focal4)
        rgb, _, t = _shade(prims, o, d)
        hit = np.flatnonzero(np.isfinite(t))[::97]
        start = sum(len(x) for x in surface)
        surface.append(o[hit] + t[hit, None] * d[hit])
        observed.append(np.arange(start, start + len(hit)))
        fine_image = _downsample(rgb, w4, h4)
        stem = Path(names[i]).stem
        Image.fromarray(_to_uint8(fine_image), "RGB").save(out / f"images_{fine}" / f"{stem}.png")
        coarse_image = fine_image.reshape(height, 2, width, 2, 3).mean(axis=(1, 3))
        Image.fromarray(_to_uint8(coarse_image), "RGB").save(out / f"images_{coarse}" / f"{stem}.png")
        depth = (t * (d @ -c2w[:3, 2]))[np.isfinite(t)]
        world = np.eye(4)
        world[:3, :3] = rot @ c2w[:3, :3]
        world[:3, 3] = scale * rot @ c2w[:3, 3] + trans
        hwf = coarse * np.array([[height], [width], [focal4 * fine / coarse]])
        llff = np.concatenate([opengl_to_llff(world), hwf], axis=1)
        rows.append(np.concatenate([llff.ravel(), scale * np.array([depth.min(), depth.max()])]))
    np.save(out / "poses_bounds.npy", np.stack(rows).astype(np.float64))
    world = np.tile(np.eye(4), (n_images, 1, 1))
    world[:, :3, :3] = rot @ poses[:, :3, :3]
    world[:, :3, 3] = scale * poses[:, :3, 3] @ rot.T + trans
    points = scale * np.concatenate(surface) @ rot.T + trans
    full_w, full_h, full_f = coarse * width, coarse * height, focal4 * fine
    camera = ColmapCamera(full_w, full_h, full_f, full_f, 0.5 * full_w, 0.5 * full_h)
    order = np.random.default_rng([seed, 8]).permutation(n_images)  # COLMAP ids not in name order
    write_model(out / "sparse" / "0", [names[i] for i in order], camera, world[order], points,
                [observed[i] for i in order])  # fmt: skip
    return out


def make_scene(kind: str, out_dir: str | Path, seed: int = 0, size: int | None = None, depth: str = "standard") -> Path:
    """Entry point of ``ngp-ohem make-scene``: kind "blender" (size x size), "llff" (size x 3/4 size,
    ``depth`` "standard" or "deep", see :func:`llff_geometry`) or "mipnerf360" (images_8/ of size x 2/3
    size, images_4/ twice that)."""
    if kind == "blender":
        return make_blender_scene(out_dir, seed=seed, size=100 if size is None else size)
    if kind == "llff":
        width = 100 if size is None else _check_size("size", size, 4)
        return make_llff_scene(out_dir, seed=seed, width=width, height=max(4, round(0.75 * width)), depth=depth)
    if kind == "mipnerf360":
        width = 48 if size is None else _check_size("size", size, 4)
        return make_mipnerf360_scene(out_dir, seed=seed, width=width, height=max(4, round(2 * width / 3)))
    raise DatasetError(f"unknown procedural scene kind '{kind}'; known: blender, llff, mipnerf360")
