"""Scale features: activation checkpointing changes memory, not results; a resumed run neither repeats
nor skips documents; hub streaming keeps the local files' contract."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import diffutron.training.loop as loop_module
from diffutron.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainingConfig
from diffutron.data import DataReport, build_blocks, iter_documents
from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.models import MaskedLMParts
from diffutron.training import train
from diffutron.training.loop import BlockBatches, enable_activation_checkpointing
from diffutron.training.state import TrainState


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(micro_model, tokenizer, lora):
    from diffutron.config import LoraConfig
    from diffutron.models.lora import apply_lora

    ids = torch.randint(10, len(tokenizer), (2, 48), generator=torch.Generator().manual_seed(0))
    results = []
    for ckpt in (False, True):
        model = type(micro_model)(micro_model.config)
        model.load_state_dict(micro_model.state_dict())
        if ckpt:
            enable_activation_checkpointing(model)
        if lora:
            torch.manual_seed(5)  # the same adapter initialisation both times
            model = apply_lora(model, LoraConfig(enabled=True, r=4, alpha=8))
        parts = MaskedLMParts(model).train()
        out = mdlm_loss(parts, ids, torch.ones_like(ids, dtype=torch.bool), schedule=get_schedule("linear"),
                        mask_id=tokenizer.mask_token_id, generator=torch.Generator().manual_seed(1))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(out.loss.detach()), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_config_option_turns_checkpointing_on(micro_model):
    enable_activation_checkpointing(micro_model)
    layer = micro_model.model.layers[0]
    assert getattr(layer, "gradient_checkpointing", False)


def _documents(n: int) -> list[str]:
    words = ["Ankara", "İstanbul", "Iğdır", "öğretmen", "çocuk", "kütüphane", "şehir", "deniz", "güneş"]
    rng = np.random.default_rng(0)
    return [f"belge{i} " + " ".join(rng.choice(words, size=rng.integers(3, 12))) for i in range(n)]


def test_resumed_batches_neither_repeat_nor_skip_documents(tokenizer):
    docs = _documents(120)
    blocks = build_blocks(iter(docs), tokenizer, 16, progress=False)
    # packing keeps every document exactly once, in order
    stream = tokenizer.decode(blocks.reshape(-1).tolist(), skip_special_tokens=True).replace(" ", "")
    for i, doc in enumerate(docs[:-3]):  # the tail shorter than a block may be dropped
        assert stream.count(f"belge{i}" + doc.split(" ", 1)[1].replace(" ", "")) == 1, i
    idx = np.arange(len(blocks))

    def consume(batches, state, n):
        return [tuple(batches.get(state)[0].flatten().tolist()) for _ in range(n)]

    total = 3 * (len(idx) // 4)  # three epochs of batch 4
    full = consume(BlockBatches(blocks, idx, 4, 7, 0, 1), TrainState(), total)
    state = TrainState()
    first = consume(BlockBatches(blocks, idx, 4, 7, 0, 1), state, total // 2 + 1)
    restored = TrainState(**json.loads(json.dumps(asdict(state))))  # what a checkpoint keeps
    rest = consume(BlockBatches(blocks, idx, 4, 7, 0, 1), restored, total - len(first))
    assert first + rest == full
    per_epoch = len(idx) // 4
    for e in range(3):
        rows = [row for batch in full[e * per_epoch : (e + 1) * per_epoch] for row in np.reshape(batch, (4, 16)).tolist()]
        assert len({tuple(r) for r in rows}) == len(rows)  # no block twice within an epoch


def test_a_resumed_training_run_reads_the_same_rows_as_an_uninterrupted_one(tmp_path, monkeypatch, tokenizer):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(_documents(160)) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(tmp_path / "tok")

    def cfg():
        return RunConfig(
            model=ModelConfig(preset="tiny", overrides=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                            intermediate_size=64)),
            tokenizer=TokenizerConfig(path=str(tmp_path / "tok")),
            data=DataConfig(sources=[str(corpus)], block_size=16, val_fraction=0.05),
            training=TrainingConfig(max_steps=9, batch_size=8, eval_every=0, eval_blocks=4, eval_t_samples=1,
                                    save_every=3, log_every=1, warmup_steps=1, precision="no"),
        )

    seen: list[tuple] = []
    real_get = BlockBatches.get

    def recording_get(self, state):
        ids, maskable = real_get(self, state)
        seen.append((state.epoch, state.batch_in_epoch, ids.sum().item()))
        return ids, maskable

    monkeypatch.setattr(BlockBatches, "get", recording_get)
    train(cfg(), tmp_path / "full", progress=False)
    full, seen[:] = list(seen), []

    real_loss, calls = loop_module.mdlm_loss, {"n": 0}

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    monkeypatch.setattr(loop_module, "mdlm_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), tmp_path / "crash", progress=False)
    before, seen[:] = list(seen), []
    monkeypatch.setattr(loop_module, "mdlm_loss", real_loss)
    train(cfg(), tmp_path / "crash", resume=True, progress=False)
    assert before[:6] + seen == full  # checkpoint at step 6: batches 7-8 are read again, none skipped


def test_hub_streaming_of_a_local_dataset_keeps_the_file_contract(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    folder.mkdir()
    docs = _documents(30)
    rows = [{"text": d} for d in docs[:15]] + [{"text": ""}] + [{"text": d} for d in docs[15:]]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    local, hub = DataReport(), DataReport()
    from_file = list(iter_documents(str(folder / "train.jsonl"), local))
    from_hub = list(iter_documents({"hub": str(folder), "split": "train"}, hub))
    assert from_hub == from_file == docs
    assert hub.documents == local.documents == 30
    assert sum(hub.problems_by_kind().values()) if hasattr(hub, "problems_by_kind") else hub.n_problems == 1
