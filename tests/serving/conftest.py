"""Serving fixtures: a micro model saved as a checkpoint, and live servers on loopback ports."""

from __future__ import annotations

import pytest
import torch

from .helpers import LiveServer, make_app

MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


@pytest.fixture(autouse=True)
def _serving_on_one_thread(one_thread):
    """Every serving test runs on one torch thread (``one_thread`` in tests/conftest.py)."""


@pytest.fixture(scope="session")
def serve_model(tokenizer):
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, max_position_embeddings=256, **MICRO))
    return model.eval()


@pytest.fixture(scope="session")
def serve_ckpt(tmp_path_factory, tokenizer, serve_model):
    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint

    out = tmp_path_factory.mktemp("serve") / "model"
    save_checkpoint(out, serve_model, tokenizer, DiffusionSettings(mask_token_id=tokenizer.mask_token_id))
    return out


@pytest.fixture(scope="module")
def live(serve_model, tokenizer):
    server = LiveServer(make_app(serve_model, tokenizer, max_batch=16, max_queue=64))
    yield server
    server.close()
