"""MONAI / Medical Segmentation Decathlon datalists: ``{"training": [{"image": ..., "label": ...}]}``.

Paths inside a datalist are relative to the datalist file (absolute paths are kept). Reader studies
use two optional keys per entry: ``organ`` (the host organ of the tumor, e.g. ``liver``) and
``tumor_label`` (the label id that marks tumor voxels; default: every nonzero voxel of a binary mask).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import parse_json, read_small_text

SECTIONS = ("training", "validation", "test", "testing")


@dataclass(frozen=True)
class DatalistEntry:
    """One entry of a datalist.

    Attributes:
        image: CT file (absolute path).
        label: label file (absolute path).
        organ: host organ named by the entry, or ``None``.
        tumor_label: label id of tumor voxels, or ``None`` (any nonzero voxel of a binary mask).
        source: ``"<datalist file>#<section>[<index>]"``, for error messages.
        extra: the entry's other keys.
    """

    image: Path
    label: Path
    organ: str | None
    tumor_label: int | None
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def _entry_path(value: Any, key: str, base: Path, where: str, datalist: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: '{key}' must be a file path (string), got {value!r}", datalist)
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise InputError(f"{where}: {key} file not found: {path}", datalist)
    return path


def read_datalist(path: str | os.PathLike[str], section: str | None = None) -> list[DatalistEntry]:
    """Read a datalist's entries.

    Args:
        path: the JSON datalist.
        section: which list to read; by default the first of ``training``, ``validation``,
            ``test``, ``testing`` that exists.

    Returns:
        The entries, in file order, with paths resolved against the datalist's folder.

    Raises:
        InputError: missing or invalid JSON, no usable section, an entry without ``image`` or
            ``label``, a file that does not exist, or a bad ``organ`` / ``tumor_label`` (the message
            names the datalist and the entry).
    """
    path = Path(path)
    data = parse_json(read_small_text(path, "datalist"), path, "datalist")
    if not isinstance(data, dict):
        raise InputError('datalist must be a JSON object like {"training": [...]}', path)
    names = [section] if section else [name for name in SECTIONS if name in data]
    if not names or names[0] not in data:
        wanted = section or " / ".join(SECTIONS)
        raise InputError(f"datalist has no '{wanted}' list", path)
    name = names[0]
    items = data[name]
    if not isinstance(items, list) or not items:
        raise InputError(f"'{name}' must be a non-empty list of entries", path)
    base = path.resolve().parent
    entries = []
    for index, item in enumerate(items):
        where = f"entry {name}[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be an object with 'image' and 'label'", path)
        for key in ("image", "label"):
            if key not in item:
                raise InputError(f"{where} has no '{key}'", path)
        organ = item.get("organ")
        if organ is not None and (not isinstance(organ, str) or not organ.strip()):
            raise InputError(f"{where}: 'organ' must be a name such as 'liver', got {organ!r}", path)
        tumor_label = item.get("tumor_label")
        if tumor_label is not None and (
            isinstance(tumor_label, bool) or not isinstance(tumor_label, int) or tumor_label <= 0
        ):
            raise InputError(f"{where}: 'tumor_label' must be a positive integer, got {tumor_label!r}", path)
        entries.append(
            DatalistEntry(
                image=_entry_path(item["image"], "image", base, where, path),
                label=_entry_path(item["label"], "label", base, where, path),
                organ=organ.strip().lower().replace(" ", "_") if organ else None,
                tumor_label=tumor_label,
                source=f"{path}#{name}[{index}]",
                extra={k: v for k, v in item.items() if k not in ("image", "label", "organ", "tumor_label")},
            )
        )
    return entries
