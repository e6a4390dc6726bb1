"""Training: the MDLM loop on accelerate, checkpoints with exact resume, loss plots."""

from .loop import TrainResult, train
from .state import TrainState, latest_checkpoint

__all__ = ["train", "TrainResult", "TrainState", "latest_checkpoint"]
