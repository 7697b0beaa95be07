"""A procedural abdominal CT phantom: the built-in default input for the demo and for tests.

The phantom is built from simple shapes in millimetres (LPS frame, identity direction): body
outline with subcutaneous fat and abdominal wall, visceral fat, spine with discs and canal,
paraspinal and psoas muscles, ribs, liver, spleen, kidneys, pancreas, gallbladder, stomach and
colon with gas, aorta, inferior vena cava and portal/splenic vein. Tissue values are typical
portal-venous-phase HU; edges get partial-volume blur and the image gets correlated CT-like noise.
Labels use TotalSegmentator v2 ids, so the same organ names work on the phantom and on real scans.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from .errors import InputError
from .labels import LabelMap, totalsegmentator_names
from .volume import Volume

# Portal-venous-phase tissue values (HU): (mean, texture standard deviation)
TISSUE_HU: dict[str, tuple[float, float]] = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 6.0),
    "muscle": (50.0, 5.0),
    "bone_cancellous": (250.0, 25.0),
    "bone_cortical": (700.0, 40.0),
    "disc": (85.0, 5.0),
    "csf": (10.0, 3.0),
    "liver": (105.0, 6.0),
    "spleen": (115.0, 5.0),
    "kidney": (165.0, 10.0),
    "pancreas": (95.0, 7.0),
    "gallbladder": (12.0, 3.0),
    "stomach": (40.0, 6.0),
    "colon": (30.0, 8.0),
    "aorta": (180.0, 5.0),
    "inferior_vena_cava": (150.0, 5.0),
    "portal_vein_and_splenic_vein": (170.0, 5.0),
}

# Expected HU range of each labelled organ in the phantom, for tests and sanity checks.
ORGAN_HU_RANGE: dict[str, tuple[float, float]] = {
    "liver": (90.0, 120.0),
    "spleen": (100.0, 130.0),
    "kidney_left": (140.0, 190.0),
    "kidney_right": (140.0, 190.0),
    "pancreas": (75.0, 115.0),
    "aorta": (160.0, 200.0),
    "inferior_vena_cava": (130.0, 170.0),
    "portal_vein_and_splenic_vein": (140.0, 190.0),
    "gallbladder": (0.0, 30.0),
}

_TS = {name: label for label, name in totalsegmentator_names().items()}


class _Canvas:
    """HU image, label map and mm coordinates that shapes are painted into."""

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_mm: float, rng: np.random.Generator):
        self.spacing = spacing_mm
        self.rng = rng
        self.hu = np.full(shape_zyx, TISSUE_HU["air"][0], dtype=np.float32)
        self.labels = np.zeros(shape_zyx, dtype=np.uint8)
        self.texture_sd = np.zeros(shape_zyx, dtype=np.float32)
        # Physical coordinate (mm) of each index along z, y, x; the volume is centred on 0.
        self.axes = [(np.arange(n) - (n - 1) / 2.0) * spacing_mm for n in shape_zyx]

    def _box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> tuple[slice, ...]:
        box = []
        for axis, coords in enumerate(self.axes):
            start = int(np.searchsorted(coords, low_mm[axis]))
            stop = int(np.searchsorted(coords, high_mm[axis], side="right"))
            box.append(slice(max(start, 0), min(stop, len(coords))))
        return tuple(box)

    def grid(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z, y, x = (coords[b] for coords, b in zip(self.axes, box, strict=True))
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def ellipsoid(self, centre_xyz, radii_xyz) -> tuple[tuple[slice, ...], np.ndarray]:
        centre = np.asarray(centre_xyz, dtype=float)[::-1]
        radii = np.asarray(radii_xyz, dtype=float)[::-1]
        box = self._box(centre - radii, centre + radii)
        z, y, x = self.grid(box)
        inside = (
            ((z - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2
        ) <= 1.0
        return box, inside

    def tube(self, points_xyz, radius_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
        """Union of capsules along a polyline of (x, y, z) points."""
        points = np.asarray(points_xyz, dtype=float)[:, ::-1]
        box = self._box(points.min(0) - radius_mm, points.max(0) + radius_mm)
        z, y, x = self.grid(box)
        inside = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
        for start, stop in itertools.pairwise(points):
            segment = stop - start
            length2 = float(segment @ segment)
            t = (z - start[0]) * segment[0] + (y - start[1]) * segment[1] + (x - start[2]) * segment[2]
            t = np.clip(t / length2, 0.0, 1.0)
            distance2 = (
                (z - start[0] - t * segment[0]) ** 2
                + (y - start[1] - t * segment[1]) ** 2
                + (x - start[2] - t * segment[2]) ** 2
            )
            inside |= distance2 <= radius_mm**2
        return box, inside

    def paint(self, region, tissue: str, label: str | None = None, hu: float | None = None) -> None:
        box, inside = region
        mean, texture = TISSUE_HU[tissue]
        self.hu[box][inside] = mean if hu is None else hu
        self.texture_sd[box][inside] = texture
        if label is not None:
            self.labels[box][inside] = 0 if label == "background" else _TS[label]


# Finer than 1 mm the phantom's arrays outgrow a workstation's memory.
MIN_SPACING_MM = 1.0
MAX_SPACING_MM = 10.0


def make_phantom(seed: int = 0, spacing_mm: float = 1.5) -> tuple[Volume, LabelMap]:
    """Build the abdominal phantom.

    Args:
        seed: random seed; the same seed gives bit-identical output.
        spacing_mm: isotropic voxel size in mm (the field of view stays 360 x 270 x 240 mm).

    Returns:
        ``(ct, labels)``: an int16 CT in HU, shape ``(z, y, x)``, and its TotalSegmentator-named
        label map on the same grid.

    Raises:
        InputError: a seed that is not a whole number >= 0, or a spacing outside 1-10 mm.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"phantom seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(spacing_mm, int | float) or not MIN_SPACING_MM <= spacing_mm <= MAX_SPACING_MM:
        raise InputError(
            f"phantom spacing must be from {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm, got {spacing_mm!r}"
        )
    rng = np.random.default_rng(seed)
    shape = tuple(round(size / spacing_mm) for size in (240.0, 270.0, 360.0))
    canvas = _Canvas(shape, spacing_mm, rng)  # type: ignore[arg-type]

    def jitter(values, fraction: float = 0.06):
        values = np.asarray(values, dtype=float)
        return values * (1.0 + rng.uniform(-fraction, fraction, size=values.shape))

    def shift(values, mm: float = 4.0):
        return np.asarray(values, dtype=float) + rng.uniform(-mm, mm, size=3)

    z_half = 120.0
    # Body wall: skin/fat, muscle, visceral fat, as nested elliptic cylinders.
    body = jitter([165.0, 118.0])
    canvas.paint(canvas.ellipsoid([0, 0, 0], [body[0], body[1], 10 * z_half]), "fat")
    canvas.paint(canvas.ellipsoid([0, 0, 0], [body[0] - 18, body[1] - 16, 10 * z_half]), "muscle")
    canvas.paint(canvas.ellipsoid([0, 0, 0], [body[0] - 28, body[1] - 26, 10 * z_half]), "fat")

    # Spine: vertebral bodies with cortical rim, discs every 35 mm, canal, posterior muscles.
    spine_y = 62.0
    canvas.paint(canvas.tube([[0, spine_y, -z_half], [0, spine_y, z_half]], 21.0), "bone_cortical")
    canvas.paint(canvas.tube([[0, spine_y, -z_half], [0, spine_y, z_half]], 18.0), "bone_cancellous")
    for disc_z in np.arange(-z_half + 10, z_half, 35.0):
        canvas.paint(canvas.tube([[0, spine_y, disc_z - 3], [0, spine_y, disc_z + 3]], 19.0), "disc")
    canvas.paint(canvas.tube([[0, 92, -z_half], [0, 92, z_half]], 12.0), "bone_cortical")
    canvas.paint(canvas.tube([[0, 92, -z_half], [0, 92, z_half]], 7.0), "csf")
    for side in (-1, 1):
        canvas.paint(canvas.ellipsoid([side * 38, 98, 0], [24, 18, 10 * z_half]), "muscle")
        canvas.paint(canvas.tube([[side * 40, 48, -z_half], [side * 30, 52, 10]], 15.0), "muscle")

    # Ribs: elliptic arcs in the upper abdomen, one every 28 mm.
    for rib_z in np.arange(10.0, z_half, 28.0):
        angles = np.linspace(0.15 * np.pi, 0.85 * np.pi, 24)
        for side in (-1, 1):
            arc = [
                [side * (body[0] - 24) * np.cos(a), -(body[1] - 22) * np.sin(a) * 0.9 + 20, rib_z]
                for a in angles
            ]
            canvas.paint(canvas.tube(arc, 5.0), "bone_cortical")

    # Organs (LPS: patient right is -x, anterior is -y, superior is +z).
    liver_centre, liver_radii = shift([-62.0, 2.0, 55.0]), jitter([88.0, 78.0, 68.0])
    box, inside = canvas.ellipsoid(liver_centre, liver_radii)
    z, y, x = canvas.grid(box)
    inside &= (x - liver_centre[0]) + 0.6 * (liver_centre[2] - z) < 55.0  # left-lobe taper
    canvas.paint((box, inside), "liver", "liver")
    canvas.paint(canvas.ellipsoid(shift([95.0, 40.0, 60.0]), jitter([32.0, 26.0, 48.0])), "spleen", "spleen")
    for side, label, z_centre in ((-1, "kidney_right", -20.0), (1, "kidney_left", -5.0)):
        centre = shift([side * 68.0, 52.0, z_centre])
        canvas.paint(canvas.ellipsoid(centre, jitter([26.0, 22.0, 52.0])), "kidney", label)
        sinus = canvas.ellipsoid(centre + [-side * 14, 0, 0], [8.0, 8.0, 18.0])
        canvas.paint(sinus, "fat", "background")
    pancreas_path = [shift(p, 2.0) for p in ([-28, 4, -8], [5, 8, 2], [45, 14, 12], [78, 20, 22])]
    canvas.paint(canvas.tube(pancreas_path, 13.0), "pancreas", "pancreas")
    canvas.paint(canvas.ellipsoid(pancreas_path[0], [17.0, 15.0, 18.0]), "pancreas", "pancreas")  # head
    canvas.paint(
        canvas.ellipsoid(shift([-42.0, -48.0, 12.0], 2.0), [15.0, 14.0, 28.0]),
        "gallbladder",
        "gallbladder",
    )
    stomach_centre = shift([55.0, -35.0, 62.0])
    canvas.paint(canvas.ellipsoid(stomach_centre, [40.0, 30.0, 38.0]), "stomach", "stomach")
    box, inside = canvas.ellipsoid(stomach_centre, [34.0, 24.0, 32.0])
    z, y, x = canvas.grid(box)
    canvas.paint((box, inside & (y < stomach_centre[1] - 6)), "air", hu=-990.0)
    colon_path = [[-95, -10, -100], [-100, -20, -10], [-60, -70, 0], [60, -70, 0], [100, -20, -10]]
    colon_path += [[95, -10, -100]]
    canvas.paint(canvas.tube([shift(p, 3.0) for p in colon_path], 20.0), "colon", "colon")
    for gas in rng.choice(len(colon_path), size=3, replace=False):
        canvas.paint(
            canvas.ellipsoid(shift(colon_path[gas], 3.0), [13.0, 11.0, 13.0]),
            "air",
            "colon",
            hu=-980.0,
        )

    # Vessels last, so they cut through organs as they do in real anatomy.
    canvas.paint(canvas.tube([[8, 38, -z_half], [8, 38, z_half]], 12.0), "aorta", "aorta")
    canvas.paint(
        canvas.tube([[-28, 32, -z_half], [-30, 30, 40], [-34, 25, z_half]], 11.0),
        "inferior_vena_cava",
        "inferior_vena_cava",
    )
    # The splenic vein runs along the back of the pancreas and joins the portal vein behind its neck.
    portal = [[80, 42, 22], [20, 32, 4], [-20, 28, -5], [-50, 8, 25], [-75, 0, 45]]
    canvas.paint(canvas.tube(portal, 6.5), "portal_vein_and_splenic_vein", "portal_vein_and_splenic_vein")
    canvas.paint(
        canvas.tube([[-50, 4, 25], [-30, -25, 60]], 4.0),
        "portal_vein_and_splenic_vein",
        "portal_vein_and_splenic_vein",
    )

    # Tissue texture, partial-volume edges, then correlated quantum noise (about 12 HU SD).
    hu = (
        canvas.hu
        + canvas.texture_sd * ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.5) * 4.0
    )
    hu = ndimage.gaussian_filter(hu, 0.6 / spacing_mm * 1.5)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.7)
    hu += noise * (12.0 / float(noise.std()))
    hu[hu < -1024] = -1024
    ct_array = np.round(hu).astype(np.int16)

    origin = (
        -(shape[2] - 1) / 2 * spacing_mm,
        -(shape[1] - 1) / 2 * spacing_mm,
        -(shape[0] - 1) / 2 * spacing_mm,
    )
    ct = Volume(ct_array, (spacing_mm,) * 3, origin, np.eye(3), {"freetumor:source": "phantom"})
    labels = LabelMap(ct.like(canvas.labels), dict(totalsegmentator_names()))
    return ct, labels
