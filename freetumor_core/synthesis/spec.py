"""What to synthesize (``TumorSpec``) and what came out (``SynthesisResult``).

``TumorSpec`` is the one definition of every synthesis option: each field carries its type, range,
unit, choices and help in its dataclass metadata (:func:`spec_fields`). Validation, the spec file
(:meth:`TumorSpec.to_json` / :meth:`TumorSpec.from_json`), the ``freetumor synthesize`` flags and the
Slicer panel's settings all come from those definitions, so a new option is one new field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..labels import LabelMap
from ..records import SIZE_CLASSES_MM, TumorRecord
from ..volume import Volume

MAX_DIAMETER_MM = 150.0
MAX_COUNT = 50
DEFAULT_ENGINE = "handcrafted"
# Engines that run a trained model: they need ``model`` (a model folder); the others take none.
MODEL_ENGINES = frozenset({"adversarial"})
# The shipped model a model engine uses when the spec names none.
DEFAULT_MODELS = {"adversarial": "synthesizer_demo"}
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def option(
    default: Any,
    kind: type,
    help: str,
    *,
    unit: str | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
    exclusive: str | None = None,
    flag: str | None = None,
    noun: str | None = None,
) -> Any:
    """A ``TumorSpec`` field with its definition in the metadata.

    Args:
        default: the value when not given.
        kind: ``bool``, ``int``, ``float`` or ``str``.
        help: one line for ``--help``, the docs and the spec file's readers.
        unit: ``mm``, ``HU``, ... (also the suffix of the field's name).
        low, high: the allowed range (inclusive; ``low_open``: ``low`` itself is not allowed).
        choices: the allowed strings.
        optional: ``None`` is allowed (and means "not given").
        exclusive: fields with the same name here are alternatives: at most one may be given.
        flag: the command-line flag (default ``--`` and the name with ``-`` for ``_``).
        noun: what a value is called in messages (``size class``; default the field's name).
    """
    metadata = {
        "kind": kind,
        "help": help,
        "unit": unit,
        "range": None if low is None else (low, high),
        "low_open": low_open,
        "choices": choices,
        "optional": optional,
        "exclusive": exclusive,
        "flag": flag,
        "noun": noun,
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TumorSpec:
    """A request for synthetic tumors; every length is in millimetres.

    Each field's meaning, type, range and unit are in its metadata (``spec_fields()`` lists them;
    ``docs/synthesis.md`` has the table). The random seed is not part of the spec: it is an argument
    of :func:`~freetumor_core.synthesis.synthesize`.
    """

    organ: str = option(
        "liver", str, "host organ: a label name (liver), a group (kidney = left and right) or a label id"
    )
    size: str | None = option(
        None,
        str,
        "size class by diameter (tiny 5-10, small 10-20, medium 20-40, large 40-80 mm), drawn "
        "uniformly inside the class; default small",
        choices=tuple(SIZE_CLASSES_MM),
        noun="size class",
        optional=True,
        exclusive="size",
    )
    diameter_mm: float | None = option(
        None,
        float,
        "an explicit equivalent-sphere diameter instead of a size class",
        unit="mm",
        low=0.0,
        high=MAX_DIAMETER_MM,
        low_open=True,
        optional=True,
        exclusive="size",
    )
    count: int = option(1, int, "number of tumors", low=1, high=MAX_COUNT)
    margin_mm: float = option(
        3.0,
        float,
        "smallest distance from a tumor to the organ's surface and to other tumors",
        unit="mm",
        low=0.0,
        high=50.0,
    )
    avoid_margin_mm: float = option(
        3.0,
        float,
        "smallest distance from a tumor to vessels and to existing lesions",
        unit="mm",
        low=0.0,
        high=50.0,
    )
    irregularity: float = option(
        0.9,
        float,
        "0 (plain ellipsoid) .. 1 (strong smooth random deformation of the surface)",
        low=0.0,
        high=1.0,
    )
    lobulation: float = option(0.0, float, "0 (none) .. 1 (up to four prominent lobes)", low=0.0, high=1.0)
    necrosis: bool = option(False, bool, "add a darker necrotic core (tumors of 10 mm and more)")
    rim: bool = option(False, bool, "add an enhancing rim")
    well_defined: bool = option(
        False,
        bool,
        "a sharply demarcated, nearly homogeneous tumor (as many metastases): the sharpest soft edge "
        "and a quarter of the organ's drawn texture",
    )
    mass_effect: bool = option(False, bool, "push the surrounding tissue outwards")
    allow_shrink: bool = option(
        False, bool, "when the organ cannot hold a tumor, place a smaller one (warning) instead of failing"
    )
    contrast_hu: float | None = option(
        None,
        float,
        "a fixed mean contrast against the surrounding organ instead of the organ's distribution "
        "(negative: hypodense)",
        unit="HU",
        low=-400.0,
        high=400.0,
        optional=True,
    )
    engine: str = option(
        DEFAULT_ENGINE, str, "synthesis engine (see available_engines(); adversarial needs a model)"
    )
    model: str | None = option(
        None,
        str,
        "model folder of a model-based engine (config.json + model.safetensors) or a shipped model's name",
        optional=True,
    )
    qc: str | None = option(
        None,
        str,
        "quality control: a segmentation model folder (or shipped name); a tumor is kept only when it "
        "labels at least qc_threshold of the tumor's voxels as tumor, else new geometry is drawn",
        optional=True,
    )
    qc_threshold: float = option(
        0.7, float, "quality control: the fraction of tumor voxels the segmenter must find", low=0.0, high=1.0
    )
    qc_tries: int = option(
        10, int, "quality control: draws of new geometry before giving up with a report", low=1, high=100
    )

    def validated(self, source: str | os.PathLike[str] | None = None) -> TumorSpec:
        """This spec, checked against its field definitions.

        Args:
            source: the spec file the values came from, named in the error message.

        Raises:
            InputError: a value of the wrong type or out of range, the size given twice, an unknown
                engine, or a model missing for (or given to) an engine.
        """
        if self.__dict__.get("_valid"):
            return self  # a spec is immutable: once checked, it stays valid (one check per transform)
        for spec_field in spec_fields():
            _check_value(spec_field, getattr(self, spec_field.name), source)
        if not str(self.organ).strip():
            raise InputError("organ name is empty", source)
        groups: dict[str, list[str]] = {}
        for spec_field in spec_fields():
            group = spec_field.metadata["exclusive"]
            if group and getattr(self, spec_field.name) is not None:
                groups.setdefault(group, []).append(spec_field.name)
        if len(groups.get("size", ())) > 1:
            raise InputError("give either a size class or diameter_mm, not both", source)
        if self.engine in MODEL_ENGINES and not self.model and not _shipped_default(self.engine):
            raise InputError(
                f"engine '{self.engine}' needs a model folder (model); this install ships no "
                f"{DEFAULT_MODELS[self.engine]!r} model",
                source,
            )
        if self.engine not in MODEL_ENGINES and self.model is not None:
            raise InputError(f"engine '{self.engine}' takes no model, got model '{self.model}'", source)
        from .engines import available_engines

        if self.engine not in available_engines():
            raise InputError(
                f"unknown synthesis engine '{self.engine}'; available: {', '.join(available_engines())}",
                source,
            )
        object.__setattr__(self, "_valid", True)  # not a field: equality, repr and files ignore it
        return self

    def draw_diameter_mm(self, rng: np.random.Generator) -> float:
        """The diameter (mm) of one tumor: the explicit one, or uniform inside the size class."""
        if self.diameter_mm is not None:
            return float(self.diameter_mm)
        low, high = SIZE_CLASSES_MM[self.size or "small"]
        return float(rng.uniform(low, high))

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (JSON types)."""
        values = {spec_field.name: getattr(self, spec_field.name) for spec_field in spec_fields()}
        return {
            name: value.item() if isinstance(value, np.generic) else value for name, value in values.items()
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike[str] | None = None) -> TumorSpec:
        """A validated spec from ``{field: value}``; missing fields take their defaults.

        Raises:
            InputError: not an object, an unknown field, a wrong type or an out-of-range value (the
                message names ``source`` and the field).
        """
        if not isinstance(data, dict):
            raise InputError('a tumor spec must be a JSON object like {"organ": "liver"}', source)
        known = {spec_field.name: spec_field for spec_field in spec_fields()}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(
                f"unknown field '{unknown[0]}' in the tumor spec; fields: {', '.join(known)}", source
            )
        values = {name: _coerce(known[name], value, source) for name, value in data.items()}
        return cls(**values).validated(source)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write this spec as a JSON file (atomically); returns the path."""
        from ..files import write_json

        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> TumorSpec:
        """Read a spec file written by :meth:`to_json` (or by hand: any subset of the fields).

        Raises:
            InputError: the file is missing or not JSON, or a field is bad (see :meth:`from_dict`).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError("tumor spec file not found", path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"tumor spec is not valid JSON: {error}", path) from None
        return cls.from_dict(data, path)


def _shipped_default(engine: str) -> bool:
    from ..models import shipped_models

    return DEFAULT_MODELS.get(engine) in shipped_models()


def model_for(spec: TumorSpec) -> str:
    """The model folder (or shipped name) a model engine runs: ``spec.model`` or its default."""
    return spec.model or DEFAULT_MODELS[spec.engine]


def spec_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`TumorSpec`, in order, each with its ``metadata`` (kind, help, unit,
    range, low_open, choices, optional, exclusive, flag, noun)."""
    return _FIELDS


def flag_name(spec_field: dataclasses.Field) -> str:
    """The command-line flag of a spec field: ``diameter_mm`` -> ``--diameter-mm``."""
    return spec_field.metadata["flag"] or "--" + spec_field.name.replace("_", "-")


_FIELDS = dataclasses.fields(TumorSpec)


def _type_problem(spec_field: dataclasses.Field, value: Any) -> str | None:
    metadata = spec_field.metadata
    if value is None:
        return None if metadata["optional"] else "must be given (not null)"
    kind = metadata["kind"]
    if kind is bool:
        ok = isinstance(value, bool | np.bool_)
    elif kind is int:
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    return None if ok else f"must be {TYPE_NAMES[kind]}, got {value!r}"


def _check_value(spec_field: dataclasses.Field, value: Any, source: str | os.PathLike[str] | None) -> None:
    name, metadata = spec_field.name, spec_field.metadata
    problem = _type_problem(spec_field, value)
    if problem:
        raise InputError(f"{name} {problem}", source)
    if value is None:
        return
    choices = metadata["choices"]
    if choices and value not in choices:
        raise InputError(
            f"unknown {metadata['noun'] or name} '{value}'; choose from {', '.join(choices)}", source
        )
    if metadata["range"] is not None:
        low, high = metadata["range"]
        inside = math.isfinite(value) and (low < value if metadata["low_open"] else low <= value)
        inside = inside and value <= high
        if not inside:
            unit = f" {metadata['unit']}" if metadata["unit"] else ""
            if metadata["kind"] is int:
                raise InputError(f"{name} must be an integer from {low} to {high}, got {value}", source)
            if metadata["low_open"]:
                raise InputError(f"{name} must be in ({low:g}, {high:g}]{unit}, got {value}", source)
            raise InputError(f"{name} must be between {low:g} and {high:g}{unit}, got {value}", source)


def _coerce(spec_field: dataclasses.Field, value: Any, source: str | os.PathLike[str] | None) -> Any:
    """A JSON value as the field's type: checked, and whole numbers made floats where floats go."""
    problem = _type_problem(spec_field, value)
    if problem:
        raise InputError(f"{spec_field.name} {problem}", source)
    if value is not None and spec_field.metadata["kind"] is float:
        return float(value)
    return value


@dataclass
class SynthesisResult:
    """The output of :func:`~freetumor_core.synthesis.synthesize`.

    Attributes:
        ct: the new CT in HU, same grid and dtype as the input.
        labels: the input's labels plus one ``<organ>_tumor`` label per organ, same grid.
        tumors: one record per synthetic tumor, in placement order.
        tumor_parts: per tumor, its box in the volume (index slices, ``(z, y, x)``) and its boolean
            mask inside that box: the voxels this call made tumor (see :attr:`tumor_mask`).
    """

    ct: Volume
    labels: LabelMap
    tumors: list[TumorRecord] = field(default_factory=list)
    tumor_parts: list[tuple[tuple[slice, ...], np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def tumor_mask(self) -> np.ndarray:
        """Boolean ``(z, y, x)``: the voxels of the tumors this call made, and no lesion the input
        already held (a host's real ``liver_tumor`` shares the label id). Made when asked for."""
        mask = np.zeros(self.labels.array.shape, dtype=bool)
        for box, part in self.tumor_parts:
            mask[box] |= part
        return mask
