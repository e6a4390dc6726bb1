"""The forward (noising) process of masked diffusion, and the two ways of drawing it for the ELBO.

    t = sample_times(batch, generator=g)                      # one t per sequence, systematic
    noisy, masked = mask_tokens(ids, maskable, t, schedule, mask_id, generator=g)
    noisy, masked, weights = mask_counts(ids, maskable, mask_id, generator=g)

``mask_tokens`` (the ``time`` estimator): each maskable token is replaced by the mask token
independently with probability 1 - alpha(t); the ELBO weight is w(t).

``mask_counts`` (the ``count`` estimator): each row gets a number k of masked tokens drawn uniformly
from 1..n (n = its maskable tokens), exactly k positions chosen at random are masked, and the weight
is n / k. It estimates the same NELBO: given k masked tokens, the masked set is a uniform k-subset
under both draws, and integrating w(t) against the binomial chance of k masks gives
int_0^1 (1/m) C(n, k) m^k (1 - m)^(n - k) dm = 1/k for every schedule with alpha(0) = 1 and
alpha(1) = 0 (substitute m = 1 - alpha(t), dm / m = w(t) dt). So sum_k 1/k E[CE | k] = E_k~U[(n/k) CE].
What it removes is the binomial noise of the count at each t: the ``time`` draw puts a weight of up
to 1/eps on the one or two tokens a small t masks, the ``count`` draw never more than n.
Non-maskable positions (padding, SFT prompts) are never touched by either.

Every draw happens on the generator's device (a CPU generator gives the same masks whatever device
the data is on; a CUDA generator draws on the GPU), or on the data's device without one; the results
move to the data's device. A generator can only draw on its own device: drawing on the CPU with a
CUDA generator raised at the first step (issue 21).
"""

from __future__ import annotations

import torch

from .schedules import Schedule

T_EPS = 1e-3  # smallest t: w(t) ~ 1/t explodes at 0, and at t = 0 nothing is masked anyway


def draw_device(generator: torch.Generator | None, data_device: torch.device | str) -> torch.device:
    """Where random numbers are drawn: on the generator's device, else on the data's."""
    return generator.device if generator is not None else torch.device(data_device)


def sample_times(
    batch_size: int,
    *,
    eps: float = T_EPS,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Noise levels in [eps, 1). ``stratified``: systematic sampling, t_i = (u + i/B) mod 1 with one
    shared offset u ~ U[0, 1), so every batch covers [0, 1) evenly, which lowers the variance of the
    loss at no cost (MDLM's "low-discrepancy sampler"; not antithetic pairs t, 1 - t). Else i.i.d.
    ``clip`` (beta, omega): levels in [beta, omega) instead (BD3-LM's clipped training levels)."""
    at = draw_device(generator, device)
    if stratified:
        u = torch.rand(1, generator=generator, dtype=torch.float64, device=at)
        t = (u + torch.arange(batch_size, dtype=torch.float64, device=at) / batch_size) % 1.0
    else:
        t = torch.rand(batch_size, generator=generator, dtype=torch.float64, device=at)
    low, high = check_clip(clip) if clip is not None else (eps, 1.0)
    return (low + (high - low) * t).float().to(device)


def check_clip(clip: tuple[float, float] | list[float]) -> tuple[float, float]:
    """(beta, omega) with 0 < beta < omega <= 1, or a ``ValueError`` naming them."""
    try:
        low, high = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clipped noise levels are two numbers [beta, omega], got {clip!r}") from None
    if not 0.0 < low < high <= 1.0:
        raise ValueError(f"clipped noise levels need 0 < beta < omega <= 1, got [{low}, {high}]")
    return low, high


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
    mask_id: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (noisy ids, bool mask of the positions that were masked). ``t`` has shape [B] (one
    level per row) or [B, L] (one per position: block diffusion's level per block, ``block_times``)."""
    p_mask = schedule.mask_probability(t.float())
    if p_mask.dim() == 1:
        p_mask = p_mask[:, None]  # [B, 1]
    u = torch.rand(input_ids.shape, generator=generator, device=draw_device(generator, input_ids.device))
    u = u.to(input_ids.device)
    masked = (u < p_mask.to(input_ids.device)) & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked


def sample_counts(
    maskable: torch.Tensor,
    *,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Masked-token counts k in 1..n per row (n = the row's maskable tokens; 0 where n = 0), uniform.
    ``stratified``: systematic over the batch like ``sample_times``: k_i = 1 + floor(((u + i/B) mod 1) n_i).
    ``clip`` (beta, omega): the share q before the floor is drawn in [beta, omega) instead of [0, 1)."""
    return counts_of(maskable.sum(dim=1), stratified=stratified, generator=generator, clip=clip)


def counts_of(
    n: torch.Tensor,
    *,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``sample_counts`` for given sizes ``n`` [S] (rows, or the blocks of block diffusion)."""
    at = draw_device(generator, n.device)
    n = n.to(at, torch.float64)
    batch = n.shape[0]
    if stratified:
        u = torch.rand(1, generator=generator, dtype=torch.float64, device=at)
        q = (u + torch.arange(batch, dtype=torch.float64, device=at) / batch) % 1.0
    else:
        q = torch.rand(batch, generator=generator, dtype=torch.float64, device=at)
    if clip is not None:
        low, high = check_clip(clip)
        q = low + (high - low) * q
    return torch.minimum(1.0 + torch.floor(q * n), n).long()


def mask_counts(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    *,
    k: torch.Tensor | None = None,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
    blocks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (noisy ids, bool mask of the masked positions, per-row ELBO weights n / k): exactly
    ``k`` (default: ``sample_counts``) random maskable positions of each row are masked.

    ``blocks`` [B, L] (``diffusion.block.block_index``: contiguous blocks 0, 1, ..., -1 before them):
    the draw is made per block instead of per row, k_b ~ U{1..n_b} of the block's n_b maskable
    tokens (stratified over all blocks of the batch, block-major), and the weights are per position [B, L],
    n_b / k_b: block diffusion's noise level per block (each block's NELBO estimated on its own)."""
    if blocks is not None:
        return _mask_counts_per_block(input_ids, maskable, mask_id, blocks, stratified, generator, clip)
    at = draw_device(generator, input_ids.device)
    if k is None:
        k = sample_counts(maskable, stratified=stratified, generator=generator, clip=clip)
    k = k.to(at)
    n = maskable.sum(dim=1).to(at)
    scores = torch.rand(input_ids.shape, generator=generator, device=at).masked_fill_(~maskable.to(at), 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # 0 = the first position to mask
    masked = (rank < k[:, None]).to(input_ids.device) & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    weights = (n.double() / k.clamp(min=1).double()).float().to(input_ids.device)
    return noisy, masked, weights


def _mask_counts_per_block(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    blocks: torch.Tensor,
    stratified: bool,
    generator: torch.Generator | None,
    clip: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mask_counts`` with one count per block. The positions before block 0 are never maskable
    and are put in block 0's segment (their score 2.0 ranks them after every maskable one)."""
    at = draw_device(generator, input_ids.device)
    seg = blocks.to(at).clamp(min=0)  # [B, L]; blocks are contiguous, in order
    mk = maskable.to(at)
    n_seg = int(seg.max()) + 1 if seg.numel() else 1
    n = torch.zeros(seg.shape[0], n_seg, dtype=torch.long, device=at).scatter_add_(1, seg, mk.long())
    # block-major strata (block b of row r is stratum b * B + r): a row's blocks get levels spread over
    # [0, 1), not neighbouring strata; with one block per row this is the row draw exactly
    k = counts_of(n.T.flatten(), stratified=stratified, generator=generator, clip=clip)
    k = k.view(n.shape[1], n.shape[0]).T.to(at)
    scores = torch.rand(input_ids.shape, generator=generator, device=at).masked_fill_(~mk, 2.0)
    # rank inside the block: sort by (block, score), then subtract the block's first sorted index
    order_key = scores.double() + 4.0 * seg.double()
    rank = order_key.argsort(dim=1).argsort(dim=1)
    size = torch.zeros_like(n).scatter_add_(1, seg, torch.ones_like(seg))
    start = size.cumsum(dim=1) - size
    rank = rank - start.gather(1, seg)
    masked = (rank < k.gather(1, seg)).to(input_ids.device) & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    weights = (n.double() / k.clamp(min=1).double()).gather(1, seg).float().to(input_ids.device)
    return noisy, masked, weights
