"""LoRA through ``peft``: the Diffutron continual pre-training adapts the four linear layers of every block.

    model = apply_lora(model, LoraConfig(r=256, alpha=256))     # the published CPT setting
    ... train ...
    model = merge_lora(model)                                    # a plain model again, same outputs

ModernBERT names those layers ``Wqkv`` and ``Wo`` (attention) and ``Wi`` and ``Wo`` (MLP); the
default targets cover all four and leave the prediction head and embeddings frozen. The settings are
``diffutron.config.LoraConfig`` (the YAML ``lora:`` section): one definition for configs and code.
"""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from ..config import LoraConfig


def apply_lora(model: nn.Module, settings: LoraConfig) -> PeftModel:
    """Wrap ``model`` with adapters of ``settings`` (its ``enabled`` and ``merge`` are the caller's)."""
    config = PeftLoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights; a no-op for a model without adapters."""
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def trainable_share(model: nn.Module) -> tuple[int, int, float]:
    """(trainable, total, trainable / total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total, trainable / max(total, 1)
