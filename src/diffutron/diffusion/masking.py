"""The forward (noising) process of masked diffusion.

    t = sample_times(batch, generator=g)                      # one t per sequence, systematic
    noisy, masked = mask_tokens(ids, maskable, t, schedule, mask_id, generator=g)

Each maskable token is replaced by the mask token independently with probability 1 - alpha(t).
Non-maskable positions (padding, SFT prompts) are never touched.
"""

from __future__ import annotations

import torch

from .schedules import Schedule

T_EPS = 1e-3  # smallest t: w(t) ~ 1/t explodes at 0, and at t = 0 nothing is masked anyway


def sample_times(
    batch_size: int,
    *,
    eps: float = T_EPS,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise levels in [eps, 1). ``stratified``: systematic sampling, t_i = (u + i/B) mod 1 with one
    shared offset u ~ U[0, 1), so every batch covers [0, 1) evenly, which lowers the variance of the
    loss at no cost (MDLM's "low-discrepancy sampler"; not antithetic pairs t, 1 - t). Else i.i.d."""
    if stratified:
        u = torch.rand(1, generator=generator, dtype=torch.float64)
        t = (u + torch.arange(batch_size, dtype=torch.float64) / batch_size) % 1.0
    else:
        t = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return (eps + (1.0 - eps) * t).float().to(device)


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
    mask_id: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (noisy ids, bool mask of the positions that were masked). ``t`` has shape [B]."""
    p_mask = schedule.mask_probability(t.float())[:, None]  # [B, 1]
    # Draw on CPU with the caller's generator so the masks are reproducible on any device.
    u = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    masked = (u < p_mask.to(input_ids.device)) & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked
