"""Training: the MDLM loop on accelerate, checkpoints with exact resume, loss plots, staged recipes."""

from .loop import TrainResult, train
from .pipeline import PipelineResult, run_recipe
from .recipe_check import check_recipe
from .state import TrainState, latest_checkpoint

__all__ = [
    "train",
    "TrainResult",
    "TrainState",
    "latest_checkpoint",
    "run_recipe",
    "PipelineResult",
    "check_recipe",
]
