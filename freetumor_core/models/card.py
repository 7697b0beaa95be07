"""The ``README.md`` model card, generated from the config so that the two never disagree."""

from __future__ import annotations

import json
from typing import Any

from .config import ModelConfig

__all__ = ["model_card"]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _table(rows: dict[str, Any], empty: str) -> list[str]:
    if not rows:
        return [empty]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {_value(value)} |" for key, value in rows.items()]
    return lines


def _factory(name: str) -> str:
    """The dotted name of the class that builds architecture ``name``."""
    from .folder import OWN_ARCHITECTURES

    own = OWN_ARCHITECTURES.get(name)
    return own.replace(":", ".") if own else f"monai.networks.nets.{name}"


def model_card(config: ModelConfig, parameter_count: int) -> str:
    """Markdown: task, description, architecture, preprocessing, labels, training data, metrics."""
    provenance = dict(config.provenance)
    training_data = provenance.pop("training_data", None)
    pre = config.preprocessing
    lines = [
        f"# {config.task} model: {config.network_name}",
        "",
        config.description or "_No description given._",
        "",
        "## Architecture",
        "",
        f"`{_factory(config.network_name)}(**args)` with args "
        f"`{json.dumps(config.architecture['args'])}`; {parameter_count:,} parameters.",
        "",
        "## Preprocessing",
        "",
        f"- spacing (mm, x y z): {pre.spacing_mm or 'native'}",
        f"- HU window: {pre.hu_window or 'none'}",
        f"- patch size (voxels, x y z): {pre.patch_size_voxels or 'any'}",
        "",
        "## Labels",
        "",
        *_table({str(key): value for key, value in sorted(config.label_names.items())}, "_None._"),
        "",
        "## Training data",
        "",
        _value(training_data) if training_data else "_Not recorded._",
        "",
        "## Metrics",
        "",
        *_table(config.metrics, "_None measured._"),
        "",
        "## Provenance",
        "",
        *_table(provenance, "_Not recorded._"),
        "",
        "## Use",
        "",
        "```python",
        "from freetumor_core.models import load_model",
        f'network, config = load_model("this/folder", task="{config.task}", device="auto")',
        "```",
        "",
        "Weights are in `model.safetensors` (no pickle); `config.json` describes everything else.",
        "",
    ]
    return "\n".join(lines)
