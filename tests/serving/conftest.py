"""Serving fixtures: a micro model saved as a checkpoint, and live servers on loopback ports."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread; one keeps these tests steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` in a thread of this process, on 127.0.0.1 and a free port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_app(model, tokenizer, **options):
    from diffutron.serving.app import create_app

    return create_app(model, tokenizer, model_name="micro", **options)


@pytest.fixture(scope="module")
def live(serve_model, tokenizer):
    server = LiveServer(make_app(serve_model, tokenizer, max_batch=16, max_queue=64))
    yield server
    server.close()
