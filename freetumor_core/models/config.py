"""``config.json`` of a model folder: what the network is, how its input is prepared, where it came from.

A :class:`ModelConfig` is plain data with a JSON round trip (:meth:`ModelConfig.to_dict`,
:meth:`ModelConfig.from_dict`); every field is described in ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["SCHEMA_VERSION", "ModelConfig", "Preprocessing"]

SCHEMA_VERSION = 1


def _floats(value: Any, length: int, name: str, path: Any) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise InputError(f"preprocessing.{name} must be a list of {length} numbers, got {value!r}", path)
    try:
        return [float(item) for item in value]
    except (TypeError, ValueError):
        raise InputError(f"preprocessing.{name} must hold numbers, got {value!r}", path) from None


@dataclass
class Preprocessing:
    """How a CT is prepared before it enters the network.

    Attributes:
        spacing_mm: voxel size (x, y, z) in mm the network was trained at; ``None``: native spacing.
        hu_window: ``[low, high]`` HU clipped and scaled to ``[0, 1]``; ``None``: no windowing.
        patch_size_voxels: network input size (x, y, z) in voxels (training crop, inference window).
    """

    spacing_mm: list[float] | None = None
    hu_window: list[float] | None = None
    patch_size_voxels: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Any = None) -> Preprocessing:
        if not isinstance(data, dict):
            raise InputError(f"preprocessing must be an object, got {data!r}", path)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}", path)
        patch = _floats(data.get("patch_size_voxels"), 3, "patch_size_voxels", path)
        return cls(
            spacing_mm=_floats(data.get("spacing_mm"), 3, "spacing_mm", path),
            hu_window=_floats(data.get("hu_window"), 2, "hu_window", path),
            patch_size_voxels=None if patch is None else [int(item) for item in patch],
        )


@dataclass
class ModelConfig:
    """Everything about a saved network except its weights.

    Attributes:
        task: what the network does (``"segmentation"``, ``"synthesis"``, ``"reports"``, ...).
        architecture: ``{"name": N, "args": {...}}``; ``monai.networks.nets.N(**args)`` builds it.
        preprocessing: spacing, HU window and patch size of the input.
        label_names: output channel / label id -> name (``{0: "background", 1: "liver"}``).
        provenance: where it came from: ``training_data`` (a summary), ``code_version``,
            ``date_utc``, and what the trainer adds (steps, world size, run folder).
        metrics: measured numbers (validation Dice, final losses), name -> value.
        description: free text for the model card (intended use, limits).
        weights_sha256: SHA-256 of ``model.safetensors``; set by ``save_model``, checked on load.
        schema_version: version of this layout; a folder of another version is refused.
    """

    task: str
    architecture: dict[str, Any]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    label_names: dict[int, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    weights_sha256: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.check()

    def check(self, path: Any = None) -> None:
        """Raise :class:`InputError` (naming ``path``) when a field has the wrong shape."""
        if not isinstance(self.task, str) or not self.task:
            raise InputError(f"task must be a non-empty string, got {self.task!r}", path)
        architecture = self.architecture
        if (
            not isinstance(architecture, dict)
            or not isinstance(architecture.get("name"), str)
            or not isinstance(architecture.get("args", {}), dict)
            or set(architecture) - {"name", "args"}
        ):
            raise InputError(
                f'architecture must be {{"name": "<MONAI network>", "args": {{...}}}}, got {architecture!r}',
                path,
            )
        architecture.setdefault("args", {})
        for name in ("provenance", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise InputError(f"{name} must be an object", path)

    @property
    def network_name(self) -> str:
        return self.architecture["name"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: label ids become strings, as JSON object keys must."""
        return {
            "schema_version": self.schema_version,
            "task": self.task,
            "description": self.description,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing.to_dict(),
            "label_names": {str(key): value for key, value in sorted(self.label_names.items())},
            "provenance": self.provenance,
            "metrics": self.metrics,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, data: Any, path: Any = None) -> ModelConfig:
        """Read a dict written by :meth:`to_dict`.

        Raises:
            InputError: naming ``path``: not an object, a wrong schema version, a missing or unknown
                field, or a field of the wrong shape.
        """
        if not isinstance(data, dict):
            raise InputError("config must be a JSON object", path)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})", path
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown config field(s): {', '.join(sorted(unknown))}", path)
        for required in ("task", "architecture"):
            if required not in data:
                raise InputError(f"config lacks the field {required!r}", path)
        labels = data.get("label_names", {})
        if not isinstance(labels, dict) or not all(str(key).lstrip("-").isdigit() for key in labels):
            raise InputError("label_names must map integer ids to names", path)
        try:
            config = cls(
                task=data["task"],
                architecture=dict(data["architecture"]) if isinstance(data["architecture"], dict) else None,
                preprocessing=Preprocessing.from_dict(data.get("preprocessing", {}), path),
                label_names={int(key): str(value) for key, value in labels.items()},
                provenance=data.get("provenance", {}),
                metrics=data.get("metrics", {}),
                description=str(data.get("description", "")),
                weights_sha256=data.get("weights_sha256"),
            )
        except InputError as error:
            raise InputError(error.problem, path) from None
        return config
