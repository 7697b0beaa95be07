"""Band-limited random fields made on demand for one tumor's box (nothing is precomputed).

A field is white noise on a coarse lattice (one node per ``feature_mm``) interpolated to the box
with separable Gaussian kernels: three small matrix products, so the cost grows with the box, not
with a texture bank, and anisotropic voxels (5 mm slices) are handled by building each axis in mm.
"""

from __future__ import annotations

import numpy as np

FINEST_VOXELS = 3.0  # smallest texture feature, in voxels
# Multiply-adds per matrix product, below OpenBLAS's threshold for using several threads.
SINGLE_THREAD_PRODUCT = 200_000


def _axis_kernels(
    lengths: tuple[int, ...], spacings_mm: tuple[float, ...], features_mm: tuple[float, ...]
) -> list[list[np.ndarray]]:
    """Per feature size and axis, the ``(length, nodes)`` interpolation weights from lattice nodes
    to voxel centres (every feature and axis in one vectorised pass: the arrays are small, so the
    cost is per operation)."""
    # Per feature, the three axes (F * 3 rows), built from Python sequences: for so few values
    # that costs a fraction of np.tile / np.repeat.
    features = np.array([feature for feature in features_mm for _ in lengths], dtype=np.float64)
    lengths_all = np.array(tuple(lengths) * len(features_mm))
    spacings = np.array(tuple(spacings_mm) * len(features_mm), dtype=np.float64)
    extents = lengths_all * spacings
    nodes = (np.ceil(extents / features) + 3).astype(int)
    rows, columns = max(lengths), int(nodes.max())
    # Voxel and node positions per axis in units of the kernel's width, node grid centred on the box.
    scale = 1.0 / (0.6 * features)
    voxel = (np.arange(rows) + 0.5)[None, :] * (spacings * scale)[:, None]
    node = (
        np.arange(columns)[None, :] * (features * scale)[:, None]
        - ((nodes * features - extents) * (scale / 2))[:, None]
    )
    # Nodes past an axis's own count get no weight: they are put infinitely far away.
    node[np.arange(columns)[None, :] >= nodes[:, None]] = np.inf
    offsets = (voxel[:, :, None] - node[:, None, :]).astype(np.float32)
    offsets *= offsets
    offsets *= np.float32(-0.5)
    weights = np.exp(offsets, out=offsets)
    # Unit sum of squares per row: each voxel then has unit variance.
    # (Rows past an axis's own length are cut off below; they may have no weight at all.)
    norms = np.sqrt(np.einsum("aij,aij->ai", weights, weights))
    weights /= np.maximum(norms, np.float32(1e-30))[:, :, None]
    kernels = [
        np.ascontiguousarray(weights[row, :length, :count])
        for row, (length, count) in enumerate(zip(lengths_all, nodes, strict=True))
    ]
    return [kernels[i : i + len(lengths)] for i in range(0, len(kernels), len(lengths))]


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
    return smooth_noises(shape_zyx, spacing_zyx_mm, (feature_mm,), rng)[0]


def smooth_noises(
    shape_zyx: tuple[int, int, int],
    spacing_zyx_mm: np.ndarray,
    features_mm: tuple[float, ...],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One independent :func:`smooth_noise` field per feature size, drawn in that order (the same
    fields as one call per feature, for a little less work)."""
    size_z, size_y, size_x = (int(n) for n in shape_zyx)
    all_kernels = _axis_kernels(
        (size_z, size_y, size_x),
        tuple(float(s) for s in spacing_zyx_mm),
        tuple(max(float(f), 1e-3) for f in features_mm),
    )
    fields = []
    for kernels in all_kernels:
        lattice = rng.standard_normal(tuple(k.shape[1] for k in kernels), dtype=np.float32)
        # Three matrix products, x then y then z. BLAS does them 4-7 times faster than einsum's
        # own loops. None is larger than OpenBLAS's threshold for splitting a product over threads
        # (the last one goes in slabs of output rows): on a busy machine, waiting for a
        # descheduled thread made a 0.2 ms field take 5-20 ms.
        nz, ny, nx = lattice.shape
        field = (lattice.reshape(nz * ny, nx) @ kernels[2].T).reshape(nz, ny, size_x)
        field = np.matmul(kernels[1], field).reshape(nz, size_y * size_x)  # (nz, Y * X)
        out = np.empty((size_z, size_y * size_x), dtype=np.float32)
        rows = max(1, SINGLE_THREAD_PRODUCT // (nz * size_y * size_x))
        for start in range(0, size_z, rows):
            np.matmul(kernels[0][start : start + rows], field, out=out[start : start + rows])
        fields.append(out.reshape(size_z, size_y, size_x))
    return fields


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
    coarse, fine = smooth_noises(
        shape_zyx, spacing_zyx_mm, (max(feature_mm, smallest_mm), max(feature_mm / 2.0, smallest_mm)), rng
    )
    # tanh makes blotches with flat tops, as in real heterogeneous lesions, rather than pure Gaussian noise.
    coarse *= np.float32(1.2 * 0.8)
    fine *= np.float32(1.2 * 0.6)
    coarse += fine
    np.tanh(coarse, out=coarse)
    coarse *= np.float32(1.0 / 0.72)  # tanh(1.2 * N(0, 1)) has SD about 0.72
    return coarse
