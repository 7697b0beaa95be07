"""One trainer loop for every trainer: a task supplies networks, data and a step; the loop does the rest.

::

    from freetumor_core.training import TrainConfig, train
    from freetumor_core.training.toy import ToyLiverTask
    result = train(ToyLiverTask(), TrainConfig(steps=40, checkpoint_every=10), "runs/toy", resume=True)
"""

from .config import TrainConfig
from .loop import TrainResult, lr_factor, train
from .task import TrainTask, default_optimizer

__all__ = ["TrainConfig", "TrainResult", "TrainTask", "default_optimizer", "lr_factor", "train"]
