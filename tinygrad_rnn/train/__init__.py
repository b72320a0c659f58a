"""Training: the Trainer, its config, checkpoints, metrics and plots."""

from .progress import Progress
from .trainer import TrainConfig, Trainer, TrainingDivergedError, make_optimizer, write_json_atomic

__all__ = [
    "Progress",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "make_optimizer",
    "write_json_atomic",
]
