"""Training engine: settings, optimisation, reproducible sampling, building, hooks and the loop.

>>> from ssdfast.engine import TrainConfig, Trainer
>>> Trainer(TrainConfig(dataset_type="voc", datasets=["data/fruit"], net="mb1-ssd")).fit()
"""
from .hooks import Hook, StepOutput
from .optim import LrSchedule, build_param_groups, make_sgd
from .sampling import EpochSampler, SeededSamples
from .settings import TrainConfig
from .stopping import NonFiniteLossError, TrainingInterrupted
from .trainer import Trainer, train

__all__ = [
    "TrainConfig",
    "Trainer",
    "train",
    "Hook",
    "StepOutput",
    "make_sgd",
    "LrSchedule",
    "EpochSampler",
    "SeededSamples",
    "build_param_groups",
    "NonFiniteLossError",
    "TrainingInterrupted",
]
