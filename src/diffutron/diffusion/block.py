"""Block diffusion (BD3-LM, Arriola et al. 2025): autoregressive over blocks, masked diffusion inside one.

A sequence is cut into blocks of ``block_size`` tokens: log p(x) = sum_b log p(x^b | x^{<b}), and each
factor is bounded by the MDLM NELBO of that block given the clean earlier blocks. This module holds
what block mode adds to the one loss, likelihood and sampler (``diffusion.loss``, ``diffusion.elbo``,
``evaluation.likelihood``, ``sampling.engine``): which block each position is in, which keys each
query may see, and the backbone's attention mask built through transformers' own mask functions.

    blocks = block_index(maskable, block_size)             # [B, L]; -1: the clean condition
    ids, positions, allowed = training_layout(noisy, clean, blocks)   # [x_t ; x0], 2L tokens
    mask = block_attention(parts, allowed, positions, padding)        # what the encoder takes

**Blocks.** The positions before a row's first maskable position (an SFT prompt, a scored context) are
the condition, block -1: clean, seen by every block. Blocks of ``block_size`` start at the first
maskable position, so an answer is cut into blocks from its own start. Pre-training rows (everything
maskable) are cut from position 0. Padding is removed by the attention mask, not by the blocks.

**Training in one pass** (``training_layout``): the input is [x_t ; x0] (2L tokens), position ids
[0..L-1, 0..L-1], so the two copies get the same rotary (or absolute) positions. Query in the row:

| query / key | x_t          | x0                   |
|-------------|--------------|----------------------|
| x_t         | same block   | block_k < block_q    |
| x0          | never        | block_k <= block_q   |

**k noised copies** (``diffusion.noised_copies``): [x_t1 ; ... ; x_tk ; x0], (k+1)L tokens, positions
[0..L-1] k+1 times; each x_t copy is a row of the table above with the others hidden from it, so one
pass gives k loss samples at (k+1)/k tokens per sample instead of 2.

**Sampling and re-encoding** (``causal_allowed``): one copy of the canvas, a query sees the keys of
blocks <= its own. For a canvas of clean finished blocks, the current (partly masked) block and masked
later blocks, the current block's queries then see exactly what its x_t queries see in training, and
the finished blocks' keys are those of the x0 copy: the model's conditional, exactly.

**Backbones.** ModernBERT takes a mapping ``{"full_attention": mask, "sliding_attention": mask}``
(``ModernBertModel.forward`` uses it as given); the sliding mask here is the rule AND the window
|pos_q - pos_k| <= ``config.sliding_window`` on the *shared positions* (transformers' own sliding mask
would measure the window on the 2L indices). Any other masked LM whose forward takes ``position_ids``
gets the rule as one 4D mask (transformers returns a prepared 4D mask as is); RoBERTa-type models
number positions from ``padding_idx + 1``. Both need an attention implementation that takes a 4D mask:
``sdpa`` or ``eager``; any other (flash attention un-pads and ignores such masks, flex builds its own)
is switched to ``sdpa`` on the model, once, with a log line. Anything else gets a ``ValueError``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from ..models.heads import _OFFSET_POSITIONS, MaskedLMParts, _unwrap

log = logging.getLogger(__name__)

MODES = ("mdlm", "block")
MASK_IMPLEMENTATIONS = ("sdpa", "eager")  # attention implementations that honour a 4D mask


# Clipped training levels [beta, omega] by block size, chosen by the variance of the loss on briefly
# trained quickstart models (benchmarks/block_noise_variance.py, docs/block-diffusion.md): measured at
# L' = 4 and 16, each improving the held-out bound at equal steps; other sizes take the nearer one.
SUGGESTED_T_CLIP = ((4, [0.5, 1.0]), (None, [0.45, 0.95]))  # (largest block size, range); None: any


def suggested_t_clip(block_size: int) -> list[float]:
    """The measured [beta, omega] for ``block_size`` (``SUGGESTED_T_CLIP``)."""
    for largest, clip in SUGGESTED_T_CLIP:
        if largest is None or block_size <= largest:
            return list(clip)
    raise AssertionError("SUGGESTED_T_CLIP ends with a catch-all row")


def check_mode(mode: str, block_size: int | None) -> None:
    """A clear error for an unknown mode or a block mode without a positive block size."""
    if mode not in MODES:
        raise ValueError(f"diffusion mode must be one of {' | '.join(MODES)}, got {mode!r}")
    if mode == "block" and (block_size is None or isinstance(block_size, bool) or int(block_size) < 1):
        raise ValueError(f"block diffusion needs a block_size of at least 1, got {block_size!r}")


def block_index(maskable: torch.Tensor, block_size: int) -> torch.Tensor:
    """[B, L] block of each position: -1 before the row's first maskable position (the clean
    condition), then ``(i - first) // block_size``. A row with nothing maskable is all -1."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    length = maskable.shape[1]
    pos = torch.arange(length, device=maskable.device)
    first = torch.where(maskable.bool(), pos, length).min(1).values  # [B]
    rel = pos[None, :] - first[:, None]
    return torch.where(rel >= 0, torch.div(rel, block_size, rounding_mode="floor"), -1)


def causal_allowed(blocks: torch.Tensor) -> torch.Tensor:
    """[B, L, L] bool, query in the row: key block <= query block (one copy, the x0 pattern)."""
    return blocks[:, None, :] <= blocks[:, :, None]


def training_layout(
    noisy: torch.Tensor, clean: torch.Tensor, blocks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one-pass training input: ids [B, 2L] = [x_t ; x0], positions [2L] = [0..L-1, 0..L-1] and
    ``allowed`` [B, 2L, 2L] (the table of the module doc).

    ``noisy`` may hold k noised copies of ``clean`` [B, L], copy-major ([k*B, L]: copy j of row r is
    row j*B + r): the input is then [x_t1 ; ... ; x_tk ; x0] ((k+1)L tokens), each x_t copy sees
    its own block and the clean earlier blocks, never another copy, so each copy's logits are those of
    its own [x_tj ; x0] pass: k loss samples for (k+1)L tokens instead of 2kL."""
    batch, length = clean.shape
    copies = noisy.shape[0] // batch
    if noisy.shape[0] != copies * batch or copies < 1:
        raise ValueError(f"noisy rows {noisy.shape[0]} are not a whole number of copies of {batch} rows")
    bq, bk = blocks[:, :, None], blocks[:, None, :]
    xt_x0 = bk < bq
    x0_x0 = bk <= bq
    no = torch.zeros_like(x0_x0)
    own = torch.eye(copies, dtype=torch.bool, device=blocks.device)  # copy i sees copy j: only i == j
    xt_xt = torch.where(own[None, :, None, :, None], (bq == bk)[:, None, :, None, :], False)
    xt_xt = xt_xt.reshape(batch, copies * length, copies * length)
    top = torch.cat([xt_xt, xt_x0.repeat(1, copies, 1)], dim=2)
    bottom = torch.cat([no.repeat(1, 1, copies), x0_x0], dim=2)
    allowed = torch.cat([top, bottom], dim=1)
    positions = torch.arange(length, device=noisy.device).repeat(copies + 1)
    xt = noisy.view(copies, batch, length).transpose(0, 1).reshape(batch, copies * length)
    return torch.cat([xt, clean], dim=1), positions, allowed


def _model_type(parts: MaskedLMParts) -> str:
    return getattr(getattr(parts.inner, "config", None), "model_type", "") or type(parts.inner).__name__


def supports_block_mode(parts: MaskedLMParts) -> bool:
    """ModernBERT, or a masked LM whose forward takes ``position_ids`` (and so a 4D mask with them)."""
    if _model_type(parts) == "modernbert":
        return True
    try:
        return "position_ids" in inspect.signature(parts.inner.forward).parameters
    except (TypeError, ValueError):
        return False


def check_backbone(parts: MaskedLMParts) -> None:
    """Raise for a backbone block mode cannot run; switch an attention implementation that ignores
    4D masks to ``sdpa`` (the model object is changed in place, once)."""
    if not supports_block_mode(parts):
        raise ValueError(
            f"block diffusion needs ModernBERT or a masked LM whose forward takes position_ids and a "
            f"4D attention mask; {_model_type(parts)!r} does not (use diffusion.mode: mdlm)"
        )
    config = parts.inner.config
    current = getattr(config, "_attn_implementation", None)
    if current not in MASK_IMPLEMENTATIONS:
        log.info(
            "block diffusion: attention implementation %r -> 'sdpa' (it takes the 4D block mask)", current
        )
        parts.inner.set_attn_implementation("sdpa")


def _rule(allowed: torch.Tensor):
    """transformers' mask-function hook: (batch, head, query, key) -> may attend."""

    def inner(batch_idx, head_idx, q_idx, kv_idx):
        return allowed[batch_idx, q_idx, kv_idx]

    return inner


def block_attention(
    parts: MaskedLMParts,
    allowed: torch.Tensor,
    positions: torch.Tensor,
    padding: torch.Tensor | None,
    *,
    dtype: torch.dtype | None = None,
) -> Any:
    """The attention mask the encoder takes for ``allowed`` [B, Q, Q] (queries and keys are the same
    tokens), with ``padding`` [B, Q] (1 = real; ``None``: none) excluded as keys. ModernBERT: the dict
    of its two layer types (the sliding one windowed on ``positions`` [Q] or [B, Q]); others: one 4D
    mask. Built by ``transformers.masking_utils.create_bidirectional_mask`` with ``allowed`` as its
    ``and_mask_function``, so its format is the implementation's (bool for sdpa, additive for eager)."""
    from transformers.masking_utils import create_bidirectional_mask

    check_backbone(parts)
    config = parts.inner.config
    batch, width = allowed.shape[0], allowed.shape[1]
    if dtype is None:
        dtype = next(parts.parameters()).dtype
    shape_of = torch.empty(
        batch, width, 1, dtype=dtype, device=allowed.device
    )  # batch, length, dtype, device
    if padding is None:
        padding = torch.ones(batch, width, dtype=torch.bool, device=allowed.device)
    padding = padding.bool().to(allowed.device)

    def build(rule: torch.Tensor) -> Any:
        return create_bidirectional_mask(config, shape_of, padding, and_mask_function=_rule(rule))

    full = build(allowed)
    if _model_type(parts) != "modernbert":
        return full
    pos = positions if positions.dim() == 2 else positions[None, :].expand(batch, -1)
    near = (pos[:, :, None] - pos[:, None, :]).abs() <= int(config.sliding_window)
    return {"full_attention": full, "sliding_attention": build(allowed & near)}


def model_positions(parts: MaskedLMParts, positions: torch.Tensor) -> torch.Tensor:
    """Position ids as the backbone numbers them: RoBERTa-type models start at ``padding_idx + 1``."""
    if _model_type(parts) in _OFFSET_POSITIONS:
        pad = getattr(parts.inner.config, "pad_token_id", None)
        return positions + (pad if pad is not None else 1) + 1
    return positions


def block_inputs(
    parts: MaskedLMParts,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    maskable: torch.Tensor,
    attention_mask: torch.Tensor | None,
    block_size: int,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The training / likelihood input of block mode: (ids [B, 2L], attention mask, position ids
    [B, 2L]) for x_t = ``noisy`` and x0 = ``clean`` (``noisy`` [k*B, L], k noised copies of each
    row: [B, (k+1)L], ``training_layout``). Blocks from ``maskable`` [B, L]; padding from
    ``attention_mask`` [B, L] (excluded as a key in every copy)."""
    blocks = block_index(maskable, block_size)
    ids, positions, allowed = training_layout(noisy, clean, blocks)
    copies = ids.shape[1] // clean.shape[1]
    padding = None if attention_mask is None else attention_mask.bool().repeat(1, copies)
    mask = block_attention(parts, allowed, positions, padding)
    pos = model_positions(parts, positions)[None, :].expand(ids.shape[0], -1)
    return ids, mask, pos


def causal_inputs(
    parts: MaskedLMParts, blocks: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[Any, torch.Tensor]:
    """The sampler's (and re-encoding's) input of block mode for a canvas whose positions are in
    ``blocks`` [B, L]: (attention mask, position ids [B, L]), key block <= query block."""
    width = blocks.shape[1]
    positions = torch.arange(width, device=blocks.device)
    mask = block_attention(parts, causal_allowed(blocks), positions, attention_mask)
    return mask, model_positions(parts, positions)[None, :].expand(blocks.shape[0], -1)


SETTINGS_ATTRIBUTE = "diffusion_block_size"  # set on a loaded model: its mode travels with it


def attach_block_size(model: torch.nn.Module, block_size: int | None) -> None:
    """Record on the model object (not in its weights or config) the block size it was trained with
    (``None``: an MDLM), so ``generate``, ``stream``, the server and the scorers run it in its mode
    without a flag. ``models.checkpoint.load_checkpoint`` calls this from the saved settings."""
    setattr(_unwrap(model), SETTINGS_ATTRIBUTE, None if block_size is None else int(block_size))


def block_size_of(model: torch.nn.Module) -> int | None:
    """The block size recorded by ``attach_block_size`` (``None``: an MDLM, or a model never loaded
    through a checkpoint)."""
    inner = _unwrap(model)
    if isinstance(inner, MaskedLMParts):  # also under an accelerate wrapper (DDP: .module)
        inner = inner.inner
    return getattr(inner, SETTINGS_ATTRIBUTE, None)
