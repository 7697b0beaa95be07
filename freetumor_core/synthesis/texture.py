"""Band-limited random fields made on demand for one tumor's box (nothing is precomputed).

A field is white noise on a coarse lattice (one node per ``feature_mm``) interpolated to the box
with separable Gaussian kernels: three small matrix products, so the cost grows with the box, not
with a texture bank, and anisotropic voxels (5 mm slices) are handled by building each axis in mm.
"""

from __future__ import annotations

import numpy as np

FINEST_VOXELS = 3.0  # smallest texture feature, in voxels


def _axis_kernels(
    lengths: tuple[int, ...], spacings_mm: tuple[float, ...], feature_mm: float
) -> list[np.ndarray]:
    """Per axis, the ``(length, nodes)`` interpolation weights from lattice nodes to voxel centres
    (all axes in one vectorised pass: the arrays are small, so the cost is per operation)."""
    extents = np.asarray(lengths) * np.asarray(spacings_mm)
    nodes = (np.ceil(extents / feature_mm) + 3).astype(int)
    rows, columns = int(max(lengths)), int(nodes.max())
    # Voxel and node positions (mm) per axis, node grid centred on the box.
    voxel_mm = (np.arange(rows) + 0.5)[None, :] * np.asarray(spacings_mm)[:, None]
    node_mm = np.arange(columns)[None, :] * feature_mm - ((nodes * feature_mm - extents) / 2.0)[:, None]
    offsets = (voxel_mm[:, :, None] - node_mm[:, None, :]) * (1.0 / (0.6 * feature_mm))
    weights = np.exp(-0.5 * offsets * offsets).astype(np.float32)
    kernels = []
    for axis, (length, count) in enumerate(zip(lengths, nodes, strict=True)):
        kernel = weights[axis, :length, :count]
        # Unit sum of squares per row: each voxel then has unit variance.
        kernel /= np.sqrt(np.einsum("ij,ij->i", kernel, kernel))[:, None]
        kernels.append(np.ascontiguousarray(kernel))
    return kernels


def smooth_noise(
    shape_zyx: tuple[int, int, int],
    spacing_zyx_mm: np.ndarray,
    feature_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A smooth Gaussian random field with features of about ``feature_mm``.

    Returns:
        float32 array of ``shape_zyx``, mean about 0 and standard deviation about 1.
    """
    kernels = _axis_kernels(
        tuple(shape_zyx), tuple(float(s) for s in spacing_zyx_mm), max(float(feature_mm), 1e-3)
    )
    lattice = rng.standard_normal(tuple(k.shape[1] for k in kernels), dtype=np.float32)
    # Three matrix products, z then y then x. BLAS does them 4-7 times faster than einsum's own
    # loops. Each is a stack of small products (one per slice, under OpenBLAS's threading
    # threshold), never one large product: a large one is split over threads, and on a busy
    # machine waiting for a descheduled thread made a 0.2 ms field take 5-20 ms.
    nz, ny, nx = lattice.shape
    field = (kernels[0] @ lattice.reshape(nz, ny * nx)).reshape(len(kernels[0]), ny, nx)  # (Z, ny, nx)
    field = np.matmul(kernels[1], field)  # (Z, Y, nx)
    return field @ kernels[2].T  # (Z, Y, X)


def tumor_texture(
    shape_zyx: tuple[int, int, int],
    spacing_zyx_mm: np.ndarray,
    feature_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mottled tumor texture: two octaves of band-limited noise, softly saturated.

    Returns:
        float32 array of ``shape_zyx`` with standard deviation about 1.
    """
    # Blotches a couple of voxels across would read as extra image noise, not as tissue.
    smallest_mm = FINEST_VOXELS * float(np.min(spacing_zyx_mm))
    coarse = smooth_noise(shape_zyx, spacing_zyx_mm, max(feature_mm, smallest_mm), rng)
    fine = smooth_noise(shape_zyx, spacing_zyx_mm, max(feature_mm / 2.0, smallest_mm), rng)
    # tanh makes blotches with flat tops, as in real heterogeneous lesions, rather than pure Gaussian noise.
    texture = np.tanh(1.2 * (0.8 * coarse + 0.6 * fine))
    return texture / 0.72  # tanh(1.2 * N(0, 1)) has SD about 0.72
