"""Split a masked LM into its encoder and its output head, so the head runs only where it is needed.

With a 256k vocabulary the output projection dominates a forward pass; the MDLM loss only needs
logits at masked positions and a sampler only at still-masked ones. ``MaskedLMParts`` wraps any
``AutoModelForMaskedLM`` (plain or wrapped by ``peft``) and exposes:

    hidden = parts.encode(input_ids, attention_mask)   # [B, L, H]
    logits = parts.head(hidden[positions])             # [N, V]   only the rows you ask for
    ce = parts(noisy_ids, attention_mask, masked, targets, suppress_id=mask_id)   # [N] training

``MaskedLMParts`` is an ``nn.Module`` whose ``forward`` returns the cross-entropy at the masked rows:
training wraps *it* with ``accelerator.prepare`` so DDP/FSDP see the whole computation in one forward
call (calling sub-modules directly would bypass their gradient-sync and parameter-gather hooks).

Known architectures (ModernBERT, BERT, RoBERTa/XLM-R, DistilBERT) are split exactly. Any other
masked LM still works through a fallback that runs the full model and returns the logits as the
"hidden" state (``parts.sparse_head`` is then False): correct, just without the speed-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

MAX_LOGIT_ELEMENTS = 1 << 25  # 32M floats (128 MB) of logits per chunk before chunking kicks in


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


def _index(i: int, device: torch.device) -> torch.Tensor:
    # torch.full writes on the device; torch.tensor([i], device=cuda) copies from the host and waits
    return torch.full((1,), i, dtype=torch.long, device=device)


def suppressed_logits(logits: torch.Tensor, suppress_id: int | None) -> torch.Tensor:
    """float32 logits with the mask token's logit at -inf: the model never predicts [M]."""
    logits = logits.float()
    if suppress_id is None:
        return logits
    return logits.index_fill(logits.ndim - 1, _index(suppress_id, logits.device), float("-inf"))


def suppressing_decoder(linear: nn.Linear, suppress_id: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``linear`` with the output ``suppress_id`` at -inf, put into the bias: the same logits as
    ``suppressed_logits(linear(x), suppress_id)`` (x @ W.T + b, and -inf + finite = -inf) without
    a second [N, V] copy of them in forward and another in backward.

    Under autocast the weight and bias are cast to its dtype here, once, and every chunk of
    ``head_cross_entropy`` (and its recomputation in backward) reuses the cast: autocast caches casts
    only of weights that require grad, so a frozen [V, H] decoder (the tied embedding in a LoRA
    stage) was otherwise re-cast in each chunk, about 75 GB of traffic per micro-batch at 256k."""
    weight = linear.weight
    bias = linear.bias if linear.bias is not None else weight.new_zeros(linear.out_features)
    kind = weight.device.type
    if torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        weight, bias = weight.to(dtype), bias.to(dtype)
    bias = bias.index_fill(0, _index(suppress_id, bias.device), float("-inf"))
    return lambda x: F.linear(x, weight, bias)


def suppressing_linear(x: torch.Tensor, linear: nn.Linear, suppress_id: int) -> torch.Tensor:
    """``suppressing_decoder(linear, suppress_id)(x)``, for one call."""
    return suppressing_decoder(linear, suppress_id)(x)


def _suppressed_ce(head: Callable, hidden: torch.Tensor, targets: torch.Tensor, suppress_id: int | None):
    return F.cross_entropy(suppressed_logits(head(hidden), suppress_id), targets, reduction="none")


def head_cross_entropy(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    vocab_size: int,
    suppress_id: int | None = None,
    max_logit_elements: int = MAX_LOGIT_ELEMENTS,
) -> torch.Tensor:
    """Per-row cross-entropy of ``head(hidden)`` [N, V] against ``targets`` [N], never holding more
    than ``max_logit_elements`` logits at once in memory for backward."""
    n = hidden.shape[0]
    if n * vocab_size <= max_logit_elements:
        return _suppressed_ce(head, hidden, targets, suppress_id)
    rows = max(1, max_logit_elements // vocab_size)
    pieces = []
    for start in range(0, n, rows):
        h, y = hidden[start : start + rows], targets[start : start + rows]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_suppressed_ce, head, h, y, suppress_id, use_reentrant=False))
        else:
            pieces.append(_suppressed_ce(head, h, y, suppress_id))
    return torch.cat(pieces)


# RoBERTa-type models number positions from padding_idx + 1: of ``max_position_embeddings`` slots,
# padding_idx + 1 (2 for RoBERTa / XLM-R) are never used by a real token.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def context_limit(model: nn.Module) -> int | None:
    """The most tokens the model can take in one sequence (``None`` when its config does not say):
    ``max_position_embeddings``, less the padding offset of RoBERTa-type position ids."""
    config = getattr(_unwrap(model), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        limit -= (pad if pad is not None else 1) + 1
    return int(limit)


class MaskedLMParts(nn.Module):
    """Encoder/head view of a masked language model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # the only registered sub-module: state_dict keys are "model.<hf keys>"
        inner = _unwrap(model)
        self.__dict__["inner"] = inner  # plain attributes, not sub-modules (no duplicate parameters)
        kind = getattr(getattr(inner, "config", None), "model_type", "")
        encoder: Callable | None = None
        head: Callable | None = None
        decoder: nn.Linear | None = None  # the vocabulary projection, where the mask token is suppressed
        body: Callable | None = None  # what runs before it
        if kind == "modernbert":
            encoder, head = inner.model, lambda h: inner.decoder(inner.head(h))
            decoder, body = inner.decoder, inner.head
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
        self.__dict__["_encoder"], self.__dict__["_head"] = encoder, head
        self.__dict__["_body"] = body
        self.__dict__["_decoder"] = decoder if isinstance(decoder, nn.Linear) else None

    def compile_encoder(self, **options: Any) -> None:
        """``torch.compile`` the encoder in place (the whole model for the fallback): parameter
        names, ``state_dict`` and saved checkpoints stay those of the plain model. ``options`` go to
        ``torch.compile`` (``backend="eager"``: traced by dynamo, no code generated, for CPU tests)."""
        (self._encoder if self.sparse_head else self.model).compile(**options)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: Any = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, L, H]. ``attention_mask``: [B, L] padding, or what block diffusion
        builds (a 4D mask, ModernBERT's per-layer-type dict: ``diffusion.block``) with its
        ``position_ids``; those are passed only when given, so a backbone without them still runs."""
        extra = {} if position_ids is None else {"position_ids": position_ids}
        if self.sparse_head:
            return self._encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(hidden) if self.sparse_head else hidden

    def forward(
        self,
        noisy_ids: torch.Tensor,
        attention_mask: Any,
        masked: torch.Tensor,
        targets: torch.Tensor,
        *,
        suppress_id: int | None = None,
        sparse_head: bool = True,
        max_logit_elements: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy [N] of ``targets`` at the ``masked`` positions [B, L] of the noisy batch.
        ``max_logit_elements``: logits per chunk of the head (default ``MAX_LOGIT_ELEMENTS``).
        ``position_ids``: with a block-diffusion mask (``encode``)."""
        hidden = self.encode(noisy_ids, attention_mask, position_ids)  # [B, L, H] (or [B, L, V] for the fallback)
        if sparse_head and self.sparse_head:
            head, suppress = self.head, suppress_id
            if suppress_id is not None and self._decoder is not None:
                decoder = suppressing_decoder(self._decoder, suppress_id)  # once per forward, not per chunk
                head, suppress = (lambda h: decoder(self._body(h))), None  # -inf in the bias
            return head_cross_entropy(
                head,
                hidden[masked],
                targets,
                vocab_size=self.inner.config.vocab_size,
                suppress_id=suppress,
                max_logit_elements=max_logit_elements or MAX_LOGIT_ELEMENTS,
            )
        logits = suppressed_logits(self.head(hidden), suppress_id)  # [B, L, V]: the naive path
        return torch.nn.functional.cross_entropy(logits[masked], targets, reduction="none")

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full logits [B, L, V] (the baseline path; use encode + head on a subset where possible)."""
        return self.head(self.encode(input_ids, attention_mask))
