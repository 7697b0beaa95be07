"""Label maps with names, organ selection and alignment onto a CT grid.

A ``LabelMap`` is an integer ``Volume`` plus a ``{id: name}`` table. Names come, in this order, from
an explicit name map (a dict or a JSON file ``{"1": "liver", ...}``), the segment names stored in a
``.seg.nrrd`` header, a JSON sidecar next to the file (``labels.nii.gz`` -> ``labels.json``), or the
built-in TotalSegmentator v2 class names.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .files import parse_json, read_small_text, write_json
from .volume import Volume, read_volume, write_volume

# Names that select several labels at once. Matching is on whole names, after these aliases.
ORGAN_GROUPS: dict[str, tuple[str, ...]] = {
    "kidney": ("kidney", "kidney_left", "kidney_right"),
    "lung": (
        "lung",
        "lung_left",
        "lung_right",
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
    ),
    "adrenal_gland": ("adrenal_gland", "adrenal_gland_left", "adrenal_gland_right"),
    "vessels": (
        "aorta",
        "inferior_vena_cava",
        "portal_vein_and_splenic_vein",
        "portal_vein",
        "hepatic_vessels",
        "vessels",
    ),
}


# Metadata key set when a label map came with no names and the TotalSegmentator names were assumed.
NAMES_ASSUMED = "freetumor:names-assumed"


@cache
def totalsegmentator_names() -> dict[int, str]:
    """TotalSegmentator v2 ``total`` task: label id -> class name (117 classes)."""
    text = resources.files("freetumor_core").joinpath("data/totalsegmentator_v2.json").read_text()
    return {int(key): name for key, name in json.loads(text)["labels"].items()}


# Label ids are stored as int32 at most: larger ids would wrap around to other labels.
MAX_LABEL_ID = np.iinfo(np.int32).max


def read_name_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a JSON name map ``{"1": "liver", ...}`` (or ``{"labels": {...}}``).

    Raises:
        InputError: not a small regular UTF-8 JSON file, not an object of ``id: name``, or an id
            outside 1..2^31-1.
    """
    path = Path(path)
    return _names_from_json(parse_json(read_small_text(path, "name map"), path, "name map"), path)


def parse_name_map(text: str) -> dict[int, str]:
    """A name map given inline as JSON text (``'{"1": "liver"}'``), as ``--label-names`` accepts.

    Raises:
        InputError: not JSON, or not an object of ``id: name``.
    """
    return _names_from_json(parse_json(text, "--label-names", "name map"), "--label-names")


def _names_from_json(data: object, path: str | os.PathLike[str]) -> dict[int, str]:
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict):
        raise InputError('name map must be a JSON object like {"1": "liver"}', path)
    names = {}
    for key, name in data.items():
        try:
            label = int(key)
        except ValueError:
            raise InputError(f"name map keys must be integer label ids, got {key!r}", path) from None
        if label == 0:
            continue
        if not 0 < label <= MAX_LABEL_ID:
            raise InputError(f"label id {label} is outside 1..{MAX_LABEL_ID}", path)
        if not isinstance(name, str | int | float) or isinstance(name, bool):
            raise InputError(f"label {label}: name must be text, got {type(name).__name__}", path)
        names[label] = str(name)
    return names


def _seg_nrrd_names(metadata: dict[str, str]) -> dict[int, str]:
    names = {}
    for key, value in metadata.items():
        match = re.fullmatch(r"Segment(\d+)_Name", key)
        if match:
            label = metadata.get(f"Segment{match.group(1)}_LabelValue")
            if label is not None:
                names[int(label)] = value.strip().replace(" ", "_")
    return names


@dataclass
class LabelMap:
    """An integer label volume and the names of its labels.

    Attributes:
        volume: integer voxels, 0 = background.
        names: label id -> name (lower-case words joined by ``_``).
    """

    volume: Volume
    names: dict[int, str] = field(default_factory=dict)

    @property
    def array(self) -> np.ndarray:
        return self.volume.array

    def present(self) -> dict[int, str]:
        """Names of the labels that have at least one voxel, by id."""
        ids = np.unique(self.array)
        return {int(i): self.names.get(int(i), f"label_{int(i)}") for i in ids if i != 0}

    def volumes_ml(self) -> dict[str, float]:
        """Volume in mL of every present label, by name."""
        counts = np.bincount(self.array.ravel().astype(np.int64))
        voxel_ml = self.volume.voxel_volume_ml
        return {
            self.names.get(i, f"label_{i}"): float(counts[i] * voxel_ml)
            for i in range(1, len(counts))
            if counts[i]
        }

    def ids_for(self, organ: str) -> list[int]:
        """Label ids that make up ``organ`` (a name, a group such as ``kidney``, or an id)."""
        organ = organ.strip().lower().replace(" ", "_")
        if organ.isdigit():
            label = int(organ)
            if label in self.names or (0 < label <= int(self.array.max()) and np.any(self.array == label)):
                return [label]
            return []
        wanted = set(ORGAN_GROUPS.get(organ, (organ,)))
        return sorted(i for i, name in self.names.items() if name.lower() in wanted)

    def mask(self, organ: str) -> np.ndarray:
        """Boolean ``(z, y, x)`` mask of ``organ``.

        Raises:
            InputError: the name is unknown to this label map, or the organ has no voxels.
        """
        source = self.volume.metadata.get("freetumor:source")
        ids = self.ids_for(organ)
        if not ids:
            known = ", ".join(sorted(set(self.present().values()))) or "none"
            raise InputError(f"no label named '{organ}' (labels present: {known})", source)
        mask = np.isin(self.array, ids)
        if not mask.any():
            raise InputError(f"organ mask '{organ}' is empty (labels {ids} have no voxels)", source)
        return mask

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the label map and its JSON name sidecar (``labels.nii.gz`` + ``labels.json``)."""
        path = write_volume(self.volume, path)
        sidecar = sidecar_path(path)
        present = self.present()
        payload = {"labels": {str(i): self.names.get(i, present.get(i)) for i in sorted(present)}}
        write_json(sidecar, payload)
        return path


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``labels.nii.gz`` -> ``labels.json`` (also ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``)."""
    path = Path(path)
    name = re.sub(r"(\.seg)?\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", "", path.name, flags=re.I)
    return path.with_name(name + ".json")


def read_labels(
    path: str | os.PathLike[str], names: dict[int, str] | str | os.PathLike[str] | None = None
) -> LabelMap:
    """Read a label map and find its names (see the module docstring for the order).

    ``names`` may be a dict, a JSON name-map file, or the JSON text itself (``'{"1": "liver"}'``).

    Raises:
        InputError: unreadable file, or voxel values that are not integers.
    """
    volume = read_volume(path)
    array = volume.array
    if array.dtype.kind not in "iuf":
        raise InputError(f"label map voxels of type {array.dtype} cannot be label ids", path)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError("label map holds non-integer values; is this an image?", path)
    if array.min() < 0:
        raise InputError(f"label map holds negative values (min {array.min()})", path)
    if array.max() > MAX_LABEL_ID:
        raise InputError(f"label id {array.max():.0f} does not fit a label (at most {MAX_LABEL_ID})", path)
    if array.dtype.kind == "f":
        array = array.astype(np.int32)
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 4:
        array = array.astype(np.int32)
    volume.array = array
    if isinstance(names, str) and names.lstrip().startswith("{"):
        names = parse_name_map(names)
    elif names is not None and not isinstance(names, dict):
        names = read_name_map(names)
    elif names is None:
        names = _seg_nrrd_names(volume.metadata)
        sidecar = sidecar_path(path)
        if not names and sidecar.is_file() and Path(path).is_file():
            names = read_name_map(sidecar)
        if not names:
            names = dict(totalsegmentator_names())
            volume.metadata[NAMES_ASSUMED] = "totalsegmentator"
    return LabelMap(volume, dict(names))


def binary_labels(mask: np.ndarray, reference: Volume, name: str) -> LabelMap:
    """A one-label map (id 1 = ``name``) on ``reference``'s grid from a boolean mask."""
    return LabelMap(reference.like(mask.astype(np.uint8)), {1: name})


def align_to(labels: LabelMap, ct: Volume) -> LabelMap:
    """Put ``labels`` on ``ct``'s grid: unchanged when it already is, else nearest-neighbour
    resampling with a warning.

    Raises:
        InputError: the label map does not overlap the CT at all.
    """
    if labels.volume.same_grid(ct):
        return labels
    source = labels.volume.metadata.get("freetumor:source")
    label_image = labels.volume.to_sitk()
    resampled = sitk.Resample(label_image, ct.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(resampled).astype(labels.array.dtype)
    if labels.array.any() and not array.any():
        raise InputError(
            "label map does not overlap the CT: no labelled voxel falls inside the CT's field of "
            "view (check origin and direction)",
            source,
        )
    warnings.warn(
        f"{source or 'label map'}: grid differs from the CT's; resampled onto the CT grid "
        "(nearest neighbour)",
        stacklevel=2,
    )
    metadata = dict(labels.volume.metadata)
    return LabelMap(ct.like(array, metadata), dict(labels.names))
