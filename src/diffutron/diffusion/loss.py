"""The masked-diffusion training loss (continuous-time MDLM ELBO) with the head only at masked positions.

NELBO(x0) = E_t [ w(t) * sum_{i masked} -log p(x0_i | x_t) ],  w(t) = -alpha'(t) / (1 - alpha(t)).

One call of ``mdlm_loss`` on a batch:
  1. one t per sequence (systematic over the batch by default: one offset, evenly spaced);
  2. mask each maskable token with probability 1 - alpha(t) (``estimator="time"``), or mask exactly
     k ~ U{1..n} of a row's n maskable tokens with weight n / k instead of w(t) (``"count"``: the same
     NELBO in expectation with less variance; see ``masking``);
  3. encode the noisy batch; run the output head only on masked rows, in chunks when the
     [rows x vocab] logits would be large (each chunk re-computed in backward instead of stored;
     ``max_logit_elements`` per chunk, default ``MAX_LOGIT_ELEMENTS``, ``training.max_logit_elements``);
  4. cross-entropy with the mask token's logit at -inf (the model never predicts [M], MDLM "SUBS");
  5. weight by w(t) and normalise: ``token`` = by maskable tokens of the batch (dllm default, an
     unbiased NELBO per token), ``sequence`` = per row by its maskable count, then mean over rows.

``sparse_head=False`` computes the head on every position and selects afterwards: the naive
reference path, kept for tests and the throughput benchmark. The head's cross-entropy (chunked,
mask token suppressed) belongs to the head: ``models.heads.head_cross_entropy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.heads import MAX_LOGIT_ELEMENTS, MaskedLMParts, head_cross_entropy
from .masking import T_EPS, mask_counts, mask_tokens, sample_times
from .schedules import Schedule

NORMALIZATIONS = ("token", "sequence")
ESTIMATORS = ("time", "count")
__all__ = ["LossOutput", "head_cross_entropy", "mdlm_loss", "weighted_masked_nll", "MAX_LOGIT_ELEMENTS"]


@dataclass
class LossOutput:
    """The loss and its counts. The counts stay tensors until read: reading one waits for the
    device, which a training step should do only when it logs."""

    loss: torch.Tensor  # the scalar to back-propagate
    nelbo: torch.Tensor  # sum over masked tokens of w(t) * CE (detached, on the device)
    maskable: torch.Tensor  # [B, L] bool
    masked: torch.Tensor  # [B, L] bool

    @property
    def nelbo_sum(self) -> float:
        return float(self.nelbo)

    @property
    def n_maskable(self) -> int:
        return int(self.maskable.sum())

    @property
    def n_masked(self) -> int:
        return int(self.masked.sum())


def weighted_masked_nll(
    parts: MaskedLMParts,
    input_ids: torch.Tensor,
    noisy_ids: torch.Tensor,
    masked: torch.Tensor,
    attention_mask: torch.Tensor | None,
    weights: torch.Tensor,
    *,
    suppress_id: int | None,
    sparse_head: bool = True,
    max_logit_elements: int | None = None,
) -> torch.Tensor:
    """[B, L] tensor of weight_b * CE at masked positions (0 elsewhere). Shared by the loss and
    the likelihood estimators so all of them score exactly the same way. ``parts`` may be wrapped
    by accelerate (DDP/FSDP): it is only ever called, never looked into."""
    ce = parts(
        noisy_ids,
        attention_mask,
        masked,
        input_ids[masked],
        suppress_id=suppress_id,
        sparse_head=sparse_head,
        max_logit_elements=max_logit_elements,
    )  # [N]
    out = torch.zeros(masked.shape, dtype=ce.dtype, device=ce.device)
    row_weights = weights.to(device=ce.device, dtype=ce.dtype)[:, None].expand_as(masked)[masked]
    return out.masked_scatter(masked, ce * row_weights)


def mdlm_loss(
    parts: MaskedLMParts,
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    *,
    schedule: Schedule,
    mask_id: int,
    attention_mask: torch.Tensor | None = None,
    normalization: str = "token",
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    stratified: bool = True,
    eps: float = T_EPS,
    sparse_head: bool = True,
    max_logit_elements: int | None = None,
    estimator: str = "time",
) -> LossOutput:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    batch = input_ids.shape[0]
    if estimator == "count" and t is None:
        noisy, masked, weights = mask_counts(
            input_ids, maskable, mask_id, stratified=stratified, generator=generator
        )
    else:
        if t is None:
            t = sample_times(
                batch, eps=eps, stratified=stratified, generator=generator, device=input_ids.device
            )
        t = t.to(input_ids.device)  # a t given on the CPU for GPU inputs: weights index GPU masks below
        noisy, masked = mask_tokens(input_ids, maskable, t, schedule, mask_id, generator=generator)
        weights = schedule.weight(t.float())
    nll = weighted_masked_nll(
        parts,
        input_ids,
        noisy,
        masked,
        attention_mask,
        weights,
        suppress_id=mask_id,
        sparse_head=sparse_head,
        max_logit_elements=max_logit_elements,
    )  # [B, L]
    per_row = nll.sum(dim=1)
    maskable_per_row = maskable.sum(dim=1)
    if normalization == "token":
        loss = per_row.sum() / maskable_per_row.sum().clamp(min=1)
    else:
        has = maskable_per_row > 0
        loss = (per_row[has] / maskable_per_row[has]).sum() / has.sum().clamp(min=1)
    return LossOutput(loss=loss, nelbo=per_row.detach().sum(), maskable=maskable, masked=masked)
