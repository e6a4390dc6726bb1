"""The approximate key/value cache (models/kv_cache.py): exact where nothing changed, wired into the
sampler, and a clear error for backbones it cannot run."""

from dataclasses import replace

import pytest
import torch

from diffutron.models.heads import MaskedLMParts
from diffutron.models.kv_cache import MODE_IDS, EncoderKVCache
from diffutron.sampling import GenerationConfig, generate, infill

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def windowed_model(tokenizer):
    """Three layers (global, sliding, sliding... as ModernBERT alternates) with a window of +-4
    positions, so a 30-token canvas exercises both attention kinds and the window's edge."""
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    config = preset_config(
        "tiny",
        tokenizer,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
        local_attention=8,
        global_attn_every_n_layers=2,
        initializer_range=0.2,
    )
    model = ModernBertForMaskedLM(config).eval()
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    return model


def _canvas(vocab: int, lengths: list[int], width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=g)
    attention = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids, attention


@torch.no_grad()
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refresh_and_unchanged_canvas_give_the_plain_forward(windowed_model, mode):
    parts = MaskedLMParts(windowed_model)
    ids, attention = _canvas(windowed_model.config.vocab_size, [30, 22], 30)
    plain = parts.encode(ids, attention)
    cache = EncoderKVCache(parts)
    cache.add(2)
    rows = torch.arange(2)
    current = torch.zeros_like(ids, dtype=torch.bool)
    current[:, 12:18] = True  # the block being decoded
    kw = dict(current=current, block=torch.tensor([1, 1]), mode=torch.tensor([MODE_IDS[mode]] * 2))
    first = cache.encode(rows, ids, attention, **kw)  # a refresh: the whole canvas
    real = attention.bool()
    torch.testing.assert_close(first[real], plain[real], atol=1e-5, rtol=1e-5)
    again = cache.encode(rows, ids, attention, **kw)  # same block: active positions only
    assert cache.refreshes == 2 and cache.partial == 2
    torch.testing.assert_close(again[current], plain[current], atol=1e-5, rtol=1e-5)
    if mode == "prefix":  # the suffix after the block is recomputed too
        tail = real & (torch.arange(30) >= 12)[None, :]
        torch.testing.assert_close(again[tail], plain[tail], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_changed_block_is_seen_by_its_own_positions(windowed_model):
    """Inside a block the fresh keys of the block are used: changing a token of the block moves the
    block's hidden states the way the plain forward does (up to the cached context's staleness)."""
    parts = MaskedLMParts(windowed_model)
    ids, attention = _canvas(windowed_model.config.vocab_size, [30], 30, seed=1)
    current = torch.zeros_like(ids, dtype=torch.bool)
    current[:, 26:30] = True
    cache = EncoderKVCache(parts)
    cache.add(1)
    kw = dict(current=current, block=torch.tensor([0]), mode=torch.tensor([MODE_IDS["dual"]]))
    cache.encode(torch.arange(1), ids, attention, **kw)
    changed = ids.clone()
    changed[0, 27] = (ids[0, 27] + 1) % windowed_model.config.vocab_size
    cached = cache.encode(torch.arange(1), changed, attention, **kw)
    plain = parts.encode(changed, attention)
    before = parts.encode(ids, attention)
    err = (cached[current] - plain[current]).abs().max()
    moved = (before[current] - plain[current]).abs().max()
    assert moved > 10 * err  # the cache follows the change; what it misses is far smaller


def test_generation_with_one_step_per_block_equals_no_cache(reading_model, tokenizer):
    """Each block decoded in one pass: every pass is a refresh, so the cache must change nothing."""
    prompts = ["Türkiye'nin başkenti", "İstanbul Boğazı'nın iki yakası"]
    plain_cfg = GenerationConfig(max_new_tokens=12, steps=3, block_size=4, stop_at_eos=False)
    plain = generate(reading_model, tokenizer, prompts, plain_cfg)
    for mode in ("prefix", "dual"):
        cached = generate(
            reading_model, tokenizer, prompts, GenerationConfig(**{**vars(plain_cfg), "cache": mode})
        )
        assert cached.token_ids == plain.token_ids
        assert cached.forward_passes == plain.forward_passes


@torch.no_grad()
def test_rows_leave_and_join_and_plain_rows_ride_along(windowed_model):
    """``keep`` and ``add`` follow the sampler's rows; a row of mode 0 (and extra rows) run plainly."""
    parts = MaskedLMParts(windowed_model)
    ids, attention = _canvas(windowed_model.config.vocab_size, [30, 26, 20], 30, seed=2)
    plain = parts.encode(ids, attention)
    current = torch.zeros_like(ids, dtype=torch.bool)
    current[:, 14:18] = True
    cache = EncoderKVCache(parts)
    cache.add(3)
    modes = torch.tensor([MODE_IDS["dual"], MODE_IDS["none"], MODE_IDS["prefix"]])
    cache.encode(
        torch.arange(3), ids, attention, current=current, block=torch.zeros(3, dtype=torch.long), mode=modes
    )
    assert cache.refreshes == 2  # the plain row is not stored
    cache.keep(torch.tensor([2, 0]))  # row 1 leaves; the others swap places
    cache.add(1)  # a newcomer: refreshed at its first call
    order = torch.tensor([2, 0, 1])
    out = cache.encode(
        torch.arange(3),
        ids[order],
        attention[order],
        current=current[order],
        block=torch.zeros(3, dtype=torch.long),
        mode=torch.tensor([1, 2, 2]),
    )
    assert cache.refreshes == 3 and cache.partial == 2
    for j, b in enumerate(order.tolist()):
        torch.testing.assert_close(out[j][current[b]], plain[b][current[b]], atol=1e-5, rtol=1e-5)


def test_cached_generation_runs_several_steps_per_block(reading_model, tokenizer):
    cfg = GenerationConfig(max_new_tokens=16, steps=16, block_size=8, stop_at_eos=False, cache="dual")
    out = generate(reading_model, tokenizer, ["Ankara'da hava", "Merhaba"], cfg)
    assert out.forward_passes == 16 and all(len(t) == 16 for t in out.token_ids)
    assert (out.canvas != tokenizer.mask_token_id).all()


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_between_refreshes_every_changed_position_of_the_block_is_recomputed(
    reading_model, tokenizer, monkeypatch, mode
):
    """Three steps per block: the block's second and third passes reuse the keys/values of its first
    (a refresh, when the whole block was masked). The tokens committed since are new input, so they
    must be recomputed too, not only the positions still masked: a committed token left to its
    refresh-time keys/values would still read as a mask to every other position."""
    refreshed: dict[int, torch.Tensor] = {}  # cache row -> the canvas it was refreshed on
    checked = {"passes": 0, "committed_changes": 0}
    mask_id = tokenizer.mask_token_id
    real_run = EncoderKVCache._run

    def spy(self, ids, attention, idx, rows, store):
        if store is not None:
            for j, row in enumerate(store.tolist()):
                refreshed[row] = ids[j].clone()
        if rows is not None:
            for j, row in enumerate(rows.tolist()):
                changed = ((ids[j] != refreshed[row]) & attention[j].bool()).nonzero().flatten()
                missed = set(changed.tolist()) - set(idx[j].tolist())
                assert not missed, f"changed since the refresh but not recomputed: {sorted(missed)}"
                checked["passes"] += 1
                checked["committed_changes"] += int((ids[j, changed] != mask_id).sum())
        return real_run(self, ids, attention, idx, rows, store)

    monkeypatch.setattr(EncoderKVCache, "_run", spy)
    cfg = GenerationConfig(max_new_tokens=12, steps=9, block_size=4, stop_at_eos=False, cache=mode)
    out = generate(reading_model, tokenizer, ["Ankara'da hava", "İstanbul Boğazı'nın iki yakası"], cfg)
    assert out.forward_passes == 9 and all(len(t) == 12 for t in out.token_ids)
    # 3 blocks x 2 partial passes x 2 rows, and every one of them saw tokens committed since its refresh
    assert checked["passes"] == 12
    assert checked["committed_changes"] >= checked["passes"]


def test_unsupported_backbone_and_guidance_raise_clear_errors(tokenizer, reading_model):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).eval()
    with pytest.raises(ValueError, match="ModernBERT"):
        EncoderKVCache(MaskedLMParts(bert))
    with pytest.raises(ValueError, match="ModernBERT"):
        generate(bert, tokenizer, ["Merhaba"], GenerationConfig(max_new_tokens=4, steps=4, cache="prefix"))
    plain = generate(bert, tokenizer, ["Merhaba"], GenerationConfig(max_new_tokens=4, steps=4, cache="none"))
    assert len(plain.token_ids) == 1  # --cache none keeps working for any masked LM
    with pytest.raises(ValueError, match="guidance"):
        generate(reading_model, tokenizer, ["Merhaba"], GenerationConfig(guidance_scale=1.0, cache="dual"))
    with pytest.raises(ValueError, match="cache"):
        GenerationConfig(cache="full").validate()


def test_server_batch_with_the_cache_gives_what_generate_gives(reading_model, tokenizer):
    """The server's DecodeBatch drives the same loop: a cached row that joins a running batch, next to
    an uncached one, gives what ``generate`` gives it alone (the cache follows rows joining/leaving)."""
    from diffutron.sampling.batch import DecodeBatch

    cached = GenerationConfig(max_new_tokens=12, steps=12, block_size=4, stop_at_eos=False, cache="dual")
    plain = GenerationConfig(max_new_tokens=8, steps=8, block_size=4, stop_at_eos=False)
    alone = generate(reading_model, tokenizer, ["Türkiye'nin başkenti"], cached)
    batch = DecodeBatch(reading_model, tokenizer)
    other = batch.add("İstanbul Boğazı'nın iki yakası", plain)
    batch.step()
    row = batch.add("Türkiye'nin başkenti", cached)
    while not (row.done and other.done):
        batch.step()
    assert row.output.token_ids == alone.token_ids
    assert (
        other.output.token_ids
        == generate(reading_model, tokenizer, ["İstanbul Boğazı'nın iki yakası"], plain).token_ids
    )


def test_infilling_with_one_step_per_block_equals_no_cache(reading_model, tokenizer):
    text = ["Ankara <mask:3> başkentidir ve <mask:3> yer alır."]
    cfg = GenerationConfig(steps=2, block_size=3)
    plain = infill(reading_model, tokenizer, text, cfg)
    for mode in ("prefix", "dual"):
        assert infill(reading_model, tokenizer, text, replace(cfg, cache=mode)).token_ids == plain.token_ids


@torch.no_grad()
def test_cache_refresh_every_k_steps_inside_a_block(reading_model, tokenizer, monkeypatch):
    """cache_refresh=k: the whole canvas again at steps 0, k, 2k... of each block; k=1 is the plain forward."""
    import diffutron.sampling.engine as engine

    made: list[EncoderKVCache] = []

    class Spy(EncoderKVCache):
        def __init__(self, parts):
            super().__init__(parts)
            made.append(self)

    monkeypatch.setattr(engine, "EncoderKVCache", Spy)
    prompts = ["Çiçekler açtı mı?"]  # one row: refresh counts are per row
    base = GenerationConfig(max_new_tokens=16, steps=16, block_size=8, stop_at_eos=False, cache="dual")
    plain = generate(reading_model, tokenizer, prompts, replace(base, cache="none"))
    counts = {}
    for k in (0, 1, 4):
        out = generate(reading_model, tokenizer, prompts, replace(base, cache_refresh=k))
        counts[k] = (made[-1].refreshes, made[-1].partial)
        if k == 1:  # every pass is a refresh: exactly the uncached decoding
            assert out.token_ids == plain.token_ids
    assert counts[0] == (2, 14)  # one refresh per block of 8 steps
    assert counts[1] == (16, 0)
    assert counts[4] == (4, 12)  # steps 0 and 4 of each block
    with pytest.raises(ValueError, match="cache_refresh"):
        replace(base, cache_refresh=-1).validate()
