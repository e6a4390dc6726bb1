"""Split a masked LM into its encoder and its output head, so the head runs only where it is needed.

With a 256k vocabulary the output projection dominates a forward pass; the MDLM loss only needs
logits at masked positions and a sampler only at still-masked ones. ``MaskedLMParts`` wraps any
``AutoModelForMaskedLM`` (plain or wrapped by ``peft``) and exposes:

    hidden = parts.encode(input_ids, attention_mask)   # [B, L, H]
    logits = parts.head(hidden[positions])             # [N, V]   only the rows you ask for

Known architectures (ModernBERT, BERT, RoBERTa/XLM-R, DistilBERT) are split exactly. Any other
masked LM still works through a fallback that runs the full model and returns the logits as the
"hidden" state (``parts.sparse_head`` is then False): correct, just without the speed-up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    # peft.PeftModel keeps the LoRA-injected transformer under get_base_model(); DDP under .module.
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(model, nn.parallel.DistributedDataParallel) or (
            hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "config")
        ):
            model = model.module
        else:
            return model


class MaskedLMParts:
    """Encoder/head view of a masked language model."""

    def __init__(self, model: nn.Module):
        self.model = model
        inner = _unwrap(model)
        self.inner = inner
        kind = getattr(getattr(inner, "config", None), "model_type", "")
        encoder: Callable | None = None
        head: Callable | None = None
        if kind == "modernbert":
            encoder, head = inner.model, lambda h: inner.decoder(inner.head(h))
        elif kind == "bert" and hasattr(inner, "cls"):
            encoder, head = inner.bert, inner.cls
        elif kind in ("roberta", "xlm-roberta", "camembert") and hasattr(inner, "lm_head"):
            encoder, head = getattr(inner, "roberta", None), inner.lm_head
        elif kind == "distilbert":
            encoder = inner.distilbert

            def head(h: torch.Tensor) -> torch.Tensor:
                h = inner.vocab_layer_norm(inner.activation(inner.vocab_transform(h)))
                return inner.vocab_projector(h)

        self.sparse_head = encoder is not None and head is not None
        self._encoder, self._head = encoder, head

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.sparse_head:
            return self._encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(hidden) if self.sparse_head else hidden

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full logits [B, L, V] (the baseline path; use encode + head on a subset where possible)."""
        return self.head(self.encode(input_ids, attention_mask))
