"""Masked diffusion: schedules, the forward process, the ELBO loss and ELBO perplexity."""

from .elbo import ElboResult, elbo_perplexity
from .loss import LossOutput, head_cross_entropy, mdlm_loss, weighted_masked_nll
from .masking import T_EPS, mask_tokens, sample_times
from .schedules import SCHEDULES, Schedule, get_schedule, register_schedule

__all__ = [
    "SCHEDULES",
    "Schedule",
    "get_schedule",
    "register_schedule",
    "sample_times",
    "mask_tokens",
    "T_EPS",
    "mdlm_loss",
    "LossOutput",
    "head_cross_entropy",
    "weighted_masked_nll",
    "elbo_perplexity",
    "ElboResult",
]
