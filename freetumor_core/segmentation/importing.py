"""``import_state_dict``: a MONAI network's state dict from elsewhere into a model folder.

The file is a safetensors file, or a torch file read with ``torch.load(..., weights_only=True)``
(tensors and plain containers only; nothing is unpickled beyond that). A checkpoint that wraps the
weights under ``state_dict`` or ``model`` is unwrapped, and a ``module.`` prefix (DDP) is dropped. The
tensors must fit the architecture exactly (names and shapes), or an :class:`InputError` names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from ..files import check_input_file
from ..models import ModelConfig, build_network, save_model
from ..models.folder import _check_fits

__all__ = ["import_config", "import_state_dict", "read_state_dict"]

WRAPPERS = ("state_dict", "model", "network")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or torch state-dict file.

    Raises:
        InputError: naming the file: missing, not a state dict, or corrupt.
    """
    path = check_input_file(path, "state dict")
    if path.stat().st_size == 0:
        raise InputError("file is empty", path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise InputError(f"corrupt or truncated safetensors file ({error})", path) from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for foreign or unsafe files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"not a torch state dict readable with weights_only=True ({first})", path) from None
    for key in WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError("not a state dict (a mapping of parameter names to tensors)", path)
    if all(str(key).startswith("module.") for key in data):
        data = {str(key)[len("module.") :]: value for key, value in data.items()}
    return {str(key): value for key, value in data.items()}


def import_state_dict(
    path: str | os.PathLike[str], folder: str | os.PathLike[str], config: ModelConfig
) -> Path:
    """Write a model folder from a state-dict file and the config that describes its network.

    Raises:
        InputError: naming the file: unreadable, or tensors that do not fit ``config.architecture``.
    """
    tensors = read_state_dict(path)
    network = build_network(config.architecture)
    _check_fits(network, tensors, Path(path), config.network_name)
    network.load_state_dict(tensors, strict=True)
    provenance = {"imported_from": Path(path).name, **config.provenance}
    config = ModelConfig.from_dict({**config.to_dict(), "provenance": provenance, "weights_sha256": None})
    return save_model(folder, network, config)


def import_config(
    architecture: str = "SwinUNETR",
    args: dict | None = None,
    label_names: dict[int, str] | None = None,
    spacing_mm: list[float] | None = None,
    hu_window: list[float] | None = None,
    patch_size_voxels: list[int] | None = None,
    description: str | None = None,
) -> ModelConfig:
    """The segmentation config of an imported network.

    ``architecture`` is a preset name (``default``, ``swinunetr_v2_fs48``) or a MONAI network class;
    a class that a preset uses starts from that preset (``SwinUNETR`` -> ``swinunetr_v2_fs48``:
    feature size 48, v2, FreeTumor's 7 classes, 1.5 mm, HU -175..250, 96³ patches). The other
    arguments replace the preset's values; a class without a preset needs ``args``.

    Raises:
        InputError: a network that no preset has, given without ``args``.
    """
    from ..models import Preprocessing
    from .networks import PRESETS, preset_config

    preset = architecture if architecture in PRESETS else None
    if preset is None:
        matching = [n for n, p in PRESETS.items() if p["architecture"]["name"] == architecture]
        preset = matching[0] if matching else None
    if preset is None and args is None:
        raise InputError(
            f"no preset for the network {architecture!r}: give its MONAI arguments (--args) and "
            f"label names, or use a preset ({', '.join(PRESETS)})"
        )
    if preset is not None:
        config = preset_config(preset)
        if args is not None:
            config.architecture["args"] = dict(args)
    else:
        config = ModelConfig(
            task="segmentation",
            architecture={"name": architecture, "args": dict(args or {})},
            preprocessing=Preprocessing(),
        )
    pre = config.preprocessing
    config.preprocessing = Preprocessing(
        spacing_mm=spacing_mm if spacing_mm is not None else pre.spacing_mm,
        hu_window=hu_window if hu_window is not None else pre.hu_window,
        patch_size_voxels=patch_size_voxels if patch_size_voxels is not None else pre.patch_size_voxels,
    )
    if label_names is not None:
        config.label_names = {0: "background", **label_names}
    if description is not None:
        config.description = description
    return config
