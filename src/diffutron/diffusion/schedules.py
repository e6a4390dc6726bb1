"""Noise schedules: one small contract shared by training, sampling and likelihood.

A schedule maps a noise level t in [0, 1] to alpha(t), the probability that a token is still clean
(alpha(0) = 1, alpha(1) = 0). Everything else derives from alpha and its derivative:

- the training weight      w(t) = -alpha'(t) / (1 - alpha(t))          (continuous-time MDLM ELBO)
- the masking rate         1 - alpha(t)                                  (forward process)
- the reveal probability   (alpha(s) - alpha(t)) / (1 - alpha(t)), s < t  (sampler: t -> s)

Usage::

    schedule = get_schedule("linear")
    schedule.alpha(t), schedule.weight(t), schedule.reveal_probability(t, s)

Schedules are registered by name with ``@register_schedule``; ``SCHEDULES`` is derived from the code.
The model never sees t: a schedule only decides how much is masked and how a masked position is weighted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(name: str):
    def wrap(cls: type[Schedule]) -> type[Schedule]:
        cls.name = name
        SCHEDULES[name] = cls
        return cls

    return wrap


@dataclass(frozen=True)
class Schedule:
    """Base class. Subclasses implement ``alpha`` and ``alpha_prime`` on tensors of t."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.alpha(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight -alpha'(t) / (1 - alpha(t)); t must be > 0."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def reveal_probability(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Probability that a token masked at time t is clean at time s < t."""
        a_t, a_s = self.alpha(t), self.alpha(s)
        return ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@register_schedule("linear")
@dataclass(frozen=True)
class LinearSchedule(Schedule):
    """alpha(t) = 1 - t (LLaDA, dllm): w(t) = 1/t."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.ones_like(t)


@register_schedule("loglinear")
@dataclass(frozen=True)
class LogLinearSchedule(Schedule):
    """alpha(t) = 1 - (1 - eps) t (MDLM): never fully masked, so w(1) stays finite. A token is still
    clean at t = 1 with probability eps: a bound adds its prior term (``elbo.prior_term``)."""

    eps: float = 1e-3

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.eps) * torch.ones_like(t)


@register_schedule("cosine")
@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """alpha(t) = 1 - cos(pi/2 (1 - t)): masks fast near t = 0 (alpha'(0) = -pi/2), slowly near t = 1
    (alpha'(1) = 0): most of the unmasking happens in a sampler's last steps."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.cos(0.5 * math.pi * (1.0 - t))

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * (1.0 - t))


def get_schedule(name: str | dict | Schedule, **kwargs) -> Schedule:
    """Build a schedule from a name (``"linear"``), a dict (``{"name": "loglinear", "eps": 1e-3}``) or pass one through."""
    if isinstance(name, Schedule):
        return name
    if isinstance(name, dict):
        kwargs = {**{k: v for k, v in name.items() if k != "name"}, **kwargs}
        name = name["name"]
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)
