"""Sampling: iterative unmasking of a masked diffusion model (one engine for CLI, eval and server).

    from diffutron.sampling import PRESETS, generate, infill, stream
    out = generate(model, tokenizer, ["Türkiye'nin başkenti"], PRESETS["diffutron"], schedule=schedule)

See docs/sampling.md for every option.
"""

from .commit import ADAPTIVE, REMASKING, SCORERS
from .config import PRESETS, SERVER_PRESET, GenerationConfig, preset
from .engine import GenerationOutput, StepEvent, generate, infill, stream
from .prompts import CHAT_STOP, chat_prompt, render_partial

__all__ = [
    "ADAPTIVE",
    "CHAT_STOP",
    "PRESETS",
    "REMASKING",
    "SCORERS",
    "SERVER_PRESET",
    "GenerationConfig",
    "GenerationOutput",
    "StepEvent",
    "chat_prompt",
    "generate",
    "infill",
    "preset",
    "render_partial",
    "stream",
]
