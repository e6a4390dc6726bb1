"""Models: presets, loading any masked-LM backbone, the encoder/head split, LoRA, the checkpoint format."""

from .checkpoint import DiffusionSettings, Loaded, load_checkpoint, save_checkpoint
from .heads import MaskedLMParts
from .lora import apply_lora, merge_lora, trainable_share
from .presets import PRESETS, preset_config

__all__ = [
    "DiffusionSettings",
    "Loaded",
    "load_checkpoint",
    "save_checkpoint",
    "MaskedLMParts",
    "apply_lora",
    "merge_lora",
    "trainable_share",
    "PRESETS",
    "preset_config",
]
