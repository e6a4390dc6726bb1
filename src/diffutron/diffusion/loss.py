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
from .block import block_index, block_inputs
from .masking import T_EPS, mask_counts, mask_tokens, sample_times
from .schedules import Schedule

NORMALIZATIONS = ("token", "sequence")
ESTIMATORS = ("time", "count")
BLOCK_NOISE = ("block", "row")  # block mode: a noise level per block (BD3-LM) or one per row
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
    while not isinstance(parts, MaskedLMParts) and isinstance(
        getattr(parts, "module", None), torch.nn.Module
    ):
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
    """[B, L] tensor of weight * CE at masked positions (0 elsewhere); ``weights`` is [B] (per row)
    or [B, L] (per position). Shared by the loss and
    the likelihood estimators so all of them score exactly the same way. ``parts`` may be wrapped
    by accelerate (DDP/FSDP): it is only ever called, never looked into.

    ``block_size``: block diffusion (``diffusion.block``): one pass over [x_t ; x0] with the block
    mask, blocks cut from the first ``maskable`` position (default: the attention mask, or every
    position), and the head only at the masked positions of the x_t half. There, ``noisy_ids`` and
    ``masked`` may be [k*B, L] against ``input_ids`` [B, L]: k noised copies of each row (copy-major)
    sharing one clean copy in one pass ([x_t1 ; ... ; x_tk ; x0]); the result is then [k*B, L]."""
    position_ids = None
    batch, length = input_ids.shape
    copies = masked.shape[0] // batch
    if block_size is None and copies != 1:
        raise ValueError("noised copies sharing one clean copy need block mode (block_size)")
    inputs, select = noisy_ids, masked
    if block_size is None:
        targets = input_ids[masked]
    else:
        if maskable is None:
            maskable = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids)
        inputs, attention_mask, position_ids = block_inputs(
            _bare(parts), noisy_ids, input_ids, maskable, attention_mask, block_size
        )
        # the head's rows in the layout's order: copy after copy inside each row; x0 is never scored
        in_layout = masked.view(copies, batch, length).transpose(0, 1).reshape(batch, copies * length)
        select = torch.cat([in_layout, torch.zeros_like(input_ids, dtype=torch.bool)], dim=1)
        targets = input_ids.repeat(1, copies + 1)[select]
    ce = parts(
        inputs,
        attention_mask,
        select,
        targets,
        suppress_id=suppress_id,
        sparse_head=sparse_head,
        max_logit_elements=max_logit_elements,
        **({} if position_ids is None else {"position_ids": position_ids}),
    )  # [N], in the order of ``select``
    if copies != 1:  # back to the rows of ``masked``: [B, kL] -> [k*B, L]
        ce = torch.zeros(select.shape, dtype=ce.dtype, device=ce.device).masked_scatter(select, ce)
        ce = ce[:, : copies * length].reshape(batch, copies, length).transpose(0, 1).reshape(-1, length)
        ce = ce[masked]
    out = torch.zeros(masked.shape, dtype=ce.dtype, device=ce.device)
    weights = weights.to(device=ce.device, dtype=ce.dtype)
    if weights.dim() == 1:  # one weight per row; [B, L]: per position (a noise level per block)
        weights = weights[:, None].expand_as(masked)
    return out.masked_scatter(masked, ce * weights[masked])


def check_copies(copies: int, block_size: int | None) -> None:
    """A clear error for a number of noised copies that is not a positive integer, or more than one
    without block mode (an MDLM has no clean copy to share: use a larger batch)."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"noised copies must be a positive integer, got {copies!r}")
    if copies > 1 and block_size is None:
        raise ValueError(
            f"{copies} noised copies share one clean copy of block mode; the MDLM has none "
            "(use diffusion.mode: block, or a larger batch)"
        )


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
    block_noise: str = "block",
    copies: int = 1,
) -> LossOutput:
    """The loss of one batch (module doc). ``block_size``: block diffusion, the same NELBO summed over
    blocks, each given the clean earlier ones (``diffusion.block``); masks, weights and normalisation
    are those of the MDLM, so ``block_size`` >= L gives the MDLM loss on the same masks. ``clip``
    (beta, omega): train on t ~ U[beta, omega] (``count``: a masked share in [beta, omega]) instead of
    [eps, 1), the clipped levels of BD3-LM; not a bound any more, so evaluation never clips.
    ``block_noise`` (block mode): ``block`` draws a level (or count) per block, as BD3-LM does, stratified
    over all blocks of the batch; ``row`` one per row, shared by its blocks. Both estimate the same sum
    of per-block NELBOs; a ``t`` given per row is always used per row.

    ``copies`` k (block mode): k noised copies of each row share its one clean copy in one pass of
    (k+1)L tokens; each copy's levels and masks are drawn as for k*B rows (stratified over all of
    them), so each estimates the same bound and the loss is their mean (k = 1: today's loss exactly).
    ``t``, when given, is then per noised row ([k*B] or [k*B, L]); ``maskable`` and ``masked`` of the
    output are [k*B, L]."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if block_noise not in BLOCK_NOISE:
        raise ValueError(f"block_noise must be one of {BLOCK_NOISE}, got {block_noise!r}")
    check_copies(copies, block_size)
    clean, clean_attention = input_ids, attention_mask
    if copies > 1:  # draw levels and masks for k*B rows, copy-major; one clean copy in the pass
        input_ids, maskable = input_ids.repeat(copies, 1), maskable.repeat(copies, 1)
    batch = input_ids.shape[0]
    blocks = None
    if block_size is not None and block_noise == "block" and t is None:
        blocks = block_index(maskable, block_size)  # [B, L]: one noise level per block
    if estimator == "count" and t is None:
        noisy, masked, weights = mask_counts(
            input_ids, maskable, mask_id, stratified=stratified, generator=generator, clip=clip, blocks=blocks
        )
    else:
        if t is None and blocks is not None:
            n_blocks = -(-input_ids.shape[1] // block_size)
            per_block = (
                sample_times(
                    batch * n_blocks,
                    eps=eps,
                    stratified=stratified,
                    generator=generator,
                    device=input_ids.device,
                    clip=clip,
                )
                .view(n_blocks, batch)
                .T
            )  # block-major strata: a row's blocks spread over [beta, omega)
            t = per_block.gather(1, blocks.clamp(min=0))  # [B, L]; the clean condition's level is unused
        elif t is None:
            t = sample_times(
                batch, eps=eps, stratified=stratified, generator=generator, device=input_ids.device, clip=clip
            )
        t = t.to(input_ids.device)  # a t given on the CPU for GPU inputs: weights index GPU masks below
        noisy, masked = mask_tokens(input_ids, maskable, t, schedule, mask_id, generator=generator)
        weights = schedule.weight(t.float())
    nll = weighted_masked_nll(
        parts,
        clean,
        noisy,
        masked,
        clean_attention,
        weights,
        suppress_id=mask_id,
        sparse_head=sparse_head,
        max_logit_elements=max_logit_elements,
        block_size=block_size,
        maskable=maskable[: clean.shape[0]],
    )  # [k*B, L]
    per_row = nll.sum(dim=1)
    maskable_per_row = maskable.sum(dim=1)
    if normalization == "token":
        loss = per_row.sum() / maskable_per_row.sum().clamp(min=1)
    else:
        has = maskable_per_row > 0
        loss = (per_row[has] / maskable_per_row[has]).sum() / has.sum().clamp(min=1)
    return LossOutput(loss=loss, nelbo=per_row.detach().sum(), maskable=maskable, masked=masked)
