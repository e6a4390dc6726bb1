"""Serving fixtures: a micro model saved as a checkpoint, and live servers on loopback ports."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import exact_enough

from .helpers import LiveServer, make_app

MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


@pytest.fixture(autouse=True)
def _serving_on_one_thread(one_thread):
    """Every serving test runs on one torch thread (``one_thread`` in tests/conftest.py)."""


@pytest.fixture(scope="session")
def float32_serve_model(tokenizer):
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, max_position_embeddings=256, **MICRO))
    return model.eval()


@pytest.fixture(scope="session")
def serve_model(float32_serve_model):
    """The served model in float64: the serving tests compare a row batched with the same row alone,
    token for token, which holds on any CPU only far above rounding noise (``exact_enough``)."""
    return exact_enough(copy.deepcopy(float32_serve_model))


@pytest.fixture(scope="session")
def serve_ckpt(tmp_path_factory, tokenizer, float32_serve_model):
    """The same weights as a float32 checkpoint, as users save them (for the command-line servers)."""
    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint

    out = tmp_path_factory.mktemp("serve") / "model"
    settings = DiffusionSettings(mask_token_id=tokenizer.mask_token_id)
    save_checkpoint(out, float32_serve_model, tokenizer, settings)
    return out


@pytest.fixture(scope="module")
def live(serve_model, tokenizer):
    server = LiveServer(make_app(serve_model, tokenizer, max_batch=16, max_queue=64))
    yield server
    server.close()
