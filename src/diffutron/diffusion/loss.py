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
from .block import block_inputs
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


def _bare(parts: torch.nn.Module) -> MaskedLMParts:
    """The ``MaskedLMParts`` inside an accelerate wrapper (DDP: ``.module``), to read its config;
    the call itself still goes through the wrapper."""
    while not isinstance(parts, MaskedLMParts) and isinstance(getattr(parts, "module", None), torch.nn.Module):
        parts = parts.module
    return parts


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
    block_size: int | None = None,
    maskable: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, L] tensor of weight_b * CE at masked positions (0 elsewhere). Shared by the loss and
    the likelihood estimators so all of them score exactly the same way. ``parts`` may be wrapped
    by accelerate (DDP/FSDP): it is only ever called, never looked into.

    ``block_size``: block diffusion (``diffusion.block``): one pass over [x_t ; x0] with the block
    mask, blocks cut from the first ``maskable`` position (default: the attention mask, or every
    position), and the head only at the masked positions of the x_t half."""
    position_ids = None
    inputs, select = noisy_ids, masked
    if block_size is not None:
        if maskable is None:
            maskable = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)
        inputs, attention_mask, position_ids = block_inputs(
            _bare(parts), noisy_ids, input_ids, maskable, attention_mask, block_size
        )
        select = torch.cat([masked, torch.zeros_like(masked)], dim=1)  # the x0 half is never scored
    ce = parts(
        inputs,
        attention_mask,
        select,
        input_ids[masked],
        suppress_id=suppress_id,
        sparse_head=sparse_head,
        max_logit_elements=max_logit_elements,
        **({} if position_ids is None else {"position_ids": position_ids}),
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
    block_size: int | None = None,
    clip: tuple[float, float] | None = None,
) -> LossOutput:
    """The loss of one batch (module doc). ``block_size``: block diffusion, the same NELBO summed over
    blocks, each given the clean earlier ones (``diffusion.block``); masks, weights and normalisation
    are those of the MDLM, so ``block_size`` >= L gives the MDLM loss on the same masks. ``clip``
    (beta, omega): train on t ~ U[beta, omega] (``count``: a masked share in [beta, omega]) instead of
    [eps, 1), the clipped levels of BD3-LM; not a bound any more, so evaluation never clips."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    batch = input_ids.shape[0]
    if estimator == "count" and t is None:
        noisy, masked, weights = mask_counts(
            input_ids, maskable, mask_id, stratified=stratified, generator=generator, clip=clip
        )
    else:
        if t is None:
            t = sample_times(
                batch, eps=eps, stratified=stratified, generator=generator, device=input_ids.device, clip=clip
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
        block_size=block_size,
        maskable=maskable,
    )  # [B, L]
    per_row = nll.sum(dim=1)
    maskable_per_row = maskable.sum(dim=1)
    if normalization == "token":
        loss = per_row.sum() / maskable_per_row.sum().clamp(min=1)
    else:
        has = maskable_per_row > 0
        loss = (per_row[has] / maskable_per_row[has]).sum() / has.sum().clamp(min=1)
    return LossOutput(loss=loss, nelbo=per_row.detach().sum(), maskable=maskable, masked=masked)
