"""Model folders: ``config.json`` + ``model.safetensors`` + ``README.md``; nothing is ever unpickled.

::

    from freetumor_core.models import ModelConfig, load_model, save_model
    save_model("liver_unet", network, ModelConfig(task="segmentation", architecture={...}))
    network, config = load_model("liver_unet", task="segmentation", device="auto")
"""

from .config import SCHEMA_VERSION, ModelConfig, Preprocessing
from .folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    build_network,
    describe_model,
    load_model,
    read_model_config,
    save_model,
)
from .shipped import SHIPPED_MODELS_DIR, resolve_model, shipped_model, shipped_models

__all__ = [
    "CONFIG_FILE",
    "SCHEMA_VERSION",
    "SHIPPED_MODELS_DIR",
    "WEIGHTS_FILE",
    "LoadedModel",
    "ModelConfig",
    "Preprocessing",
    "build_network",
    "describe_model",
    "load_model",
    "read_model_config",
    "resolve_model",
    "save_model",
    "shipped_model",
    "shipped_models",
]
