"""Sampling: iterative unmasking of a masked diffusion model (one engine for CLI, eval and server)."""

from .engine import GenerationConfig, GenerationOutput, generate

__all__ = ["GenerationConfig", "GenerationOutput", "generate"]
