"""Block diffusion (BD3-LM, ``diffusion.block``): the one-pass training mask against its definition,
its two exact extremes (block = the row is the MDLM, block = 1 is an autoregressive model), the
training pass against a block-by-block pass, the sliding window on shared positions, clipped noise
levels, the bound summed over blocks, the mode saved with a checkpoint, and block-by-block sampling.

References are built without ``training_layout``: a causal mask by ``torch.tril``, and the
block-by-block pass over [clean earlier blocks ; noisy block] with its own positions."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, ModernBertForMaskedLM

from diffutron.config import ConfigError, RunConfig, from_dict
from diffutron.diffusion import elbo_perplexity, get_schedule, mdlm_loss
from diffutron.diffusion.block import (
    attach_block_size,
    block_index,
    block_inputs,
    block_size_of,
    causal_inputs,
    training_layout,
)
from diffutron.diffusion.masking import sample_counts, sample_times
from diffutron.models.heads import MaskedLMParts
from diffutron.models.presets import preset_config

pytestmark = pytest.mark.usefixtures("one_thread")

MASK = 4
VOCAB = 60


def _modernbert(window_layers: list[str] | None = None, local_attention: int = 128) -> ModernBertForMaskedLM:
    torch.manual_seed(0)
    layers = window_layers or ["full_attention", "sliding_attention"]
    config = preset_config(
        "tiny",
        None,
        hidden_size=32,
        num_hidden_layers=len(layers),
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        vocab_size=VOCAB,
        local_attention=local_attention,
        initializer_range=0.2,  # rows that depend on their context
    )
    config.layer_types = layers
    return ModernBertForMaskedLM(config).eval()


def _ids(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def _logits_2l(parts, noisy, clean, maskable, block_size) -> torch.Tensor:
    """[B, L, V] logits of the x_t half of the one-pass training forward."""
    ids, mask, pos = block_inputs(parts, noisy, clean, maskable, None, block_size)
    return parts.head(parts.encode(ids, mask, pos))[:, : noisy.shape[1]]


def test_the_training_mask_is_the_bd3lm_table():
    """x_t sees its own block of x_t and strictly earlier blocks of x0; x0 sees x0 blocks <= its own;
    the condition (block -1, before the first maskable position) is seen by every block."""
    maskable = torch.tensor([[False, False, True, True, True, True, True]])  # 2-token prompt
    blocks = block_index(maskable, 2)
    assert blocks.tolist() == [[-1, -1, 0, 0, 1, 1, 2]]
    ids, pos, allowed = training_layout(
        torch.zeros(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.long), blocks
    )
    assert ids.shape == (1, 14) and pos.tolist() == list(range(7)) * 2
    a = allowed[0]
    for q, k in itertools.product(range(14), range(14)):
        bq, bk = int(blocks[0, q % 7]), int(blocks[0, k % 7])
        if q < 7 and k < 7:
            want = bq == bk
        elif q < 7:
            want = bk < bq
        elif k < 7:
            want = False
        else:
            want = bk <= bq
        assert bool(a[q, k]) == want, (q, k)


@pytest.mark.parametrize("estimator", ["time", "count"])
def test_block_size_of_the_whole_row_is_the_mdlm_loss_on_the_same_masks(estimator):
    parts = MaskedLMParts(_modernbert())
    ids = _ids(4, 12)
    maskable = torch.ones_like(ids, dtype=torch.bool)  # pre-training rows: no prompt (a prompt is a
    # clean block of its own, which never sees the answer, unlike in the MDLM)
    schedule = get_schedule("linear")
    out = {}
    for size in (None, 12):
        g = torch.Generator().manual_seed(3)
        out[size] = mdlm_loss(
            parts,
            ids,
            maskable,
            schedule=schedule,
            mask_id=MASK,
            generator=g,
            block_size=size,
            estimator=estimator,
        )
    assert torch.equal(out[None].masked, out[12].masked) and out[12].n_masked > 0
    torch.testing.assert_close(out[12].loss, out[None].loss, rtol=1e-5, atol=1e-5)
    # and a smaller block is another model: its loss differs on the same masks (one level per row here,
    # so that the masks are the MDLM's; per block they are drawn per block)
    g = torch.Generator().manual_seed(3)
    small = mdlm_loss(
        parts,
        ids,
        maskable,
        schedule=schedule,
        mask_id=MASK,
        generator=g,
        block_size=3,
        estimator=estimator,
        block_noise="row",
    )
    assert torch.equal(small.masked, out[None].masked)
    assert abs(float(small.loss.detach()) - float(out[None].loss.detach())) > 1e-3


def _causal_reference_nll(model: ModernBertForMaskedLM, ids: torch.Tensor) -> torch.Tensor:
    """sum_i -log p(x_i | x_<i) with the model run as a causal LM: for each i, the input
    x_0..x_{i-1} [M] with a lower-triangular mask (and the sliding window) made by hand."""
    total = torch.zeros(ids.shape[0], dtype=torch.float64)
    window = int(model.config.sliding_window)
    for i in range(ids.shape[1]):
        x = ids[:, : i + 1].clone()
        x[:, i] = MASK
        n = i + 1
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        pos = torch.arange(n)
        near = (pos[:, None] - pos[None, :]).abs() <= window
        mask = {"full_attention": causal[None, None], "sliding_attention": (causal & near)[None, None]}
        logits = model(input_ids=x, attention_mask=mask).logits[:, i].float()
        logits[:, MASK] = float("-inf")
        total += torch.nn.functional.cross_entropy(logits, ids[:, i], reduction="none").double()
    return total


def test_block_size_one_is_an_autoregressive_nll_of_the_same_tokens():
    """Every token masked (t = 1, linear: weight 1): the block-1 NELBO is sum_i -log p(x_i | x_<i)."""
    model = _modernbert(local_attention=6)  # window 3 < the row: the sliding layer really windows
    parts = MaskedLMParts(model)
    ids = _ids(3, 10, seed=1)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    out = mdlm_loss(
        parts, ids, maskable, schedule=get_schedule("linear"), mask_id=MASK, t=torch.ones(3), block_size=1
    )
    assert out.n_masked == ids.numel()
    with torch.no_grad():
        reference = _causal_reference_nll(model, ids)
    assert float(out.nelbo) == pytest.approx(float(reference.sum()), rel=1e-5)
    # the MDLM on the same all-masked rows is a different (unconditional) number
    mdlm = mdlm_loss(parts, ids, maskable, schedule=get_schedule("linear"), mask_id=MASK, t=torch.ones(3))
    assert abs(float(mdlm.nelbo) - float(reference.sum())) > 1e-2


@pytest.mark.parametrize("size", [1, 3, 4])
def test_the_one_pass_training_forward_equals_a_block_by_block_forward(size):
    """Each block's logits from [x_t ; x0] equal those of a pass over [x0 of the earlier blocks ;
    x_t of the block] with the block-causal mask (the sampler's pass), to 1e-5."""
    model = _modernbert(local_attention=4)  # window 2: the sliding layer cuts inside the prefix
    parts = MaskedLMParts(model)
    clean = _ids(2, 11, seed=2)
    maskable = torch.ones_like(clean, dtype=torch.bool)
    maskable[:, :2] = False  # a prompt
    g = torch.Generator().manual_seed(0)
    masked = (torch.rand(clean.shape, generator=g) < 0.5) & maskable
    noisy = torch.where(masked, MASK, clean)
    with torch.no_grad():
        one_pass = _logits_2l(parts, noisy, clean, maskable, size)
        blocks = block_index(maskable, size)
        for b in range(int(blocks.max()) + 1):
            end = int((blocks[0] <= b).sum())
            canvas = torch.where(blocks == b, noisy, clean)[:, :end]
            mask, pos = causal_inputs(parts, blocks[:, :end], None)
            step = parts.head(parts.encode(canvas, mask, pos))
            here = (blocks[:, :end] == b)[0]
            torch.testing.assert_close(step[:, here], one_pass[:, :end][:, here], rtol=1e-5, atol=1e-5)


def test_the_one_pass_training_forward_equals_a_block_by_block_forward_with_the_exact_cache():
    """The sampler's cache (``BlockKVCache``): each block's logits, with the prompt and finished
    blocks taken from the cache, equal the one-pass training logits to 1e-5, also at a second step
    of a block whose tokens changed in between; a finished block is computed once more (clean) and
    then only read."""
    from diffutron.models.kv_cache import BlockKVCache

    parts = MaskedLMParts(_modernbert(local_attention=4))
    clean = _ids(2, 13, seed=7)
    maskable = torch.ones_like(clean, dtype=torch.bool)
    maskable[0, :2] = False  # prompts of different lengths
    maskable[1, :3] = False
    g = torch.Generator().manual_seed(1)
    masked = (torch.rand(clean.shape, generator=g) < 0.6) & maskable
    noisy = torch.where(masked, MASK, clean)
    size = 4
    blocks = block_index(maskable, size)
    cache = BlockKVCache(parts)
    cache.add(2)
    rows = torch.arange(2)
    ones = torch.ones_like(clean)
    with torch.no_grad():
        one_pass = _logits_2l(parts, noisy, clean, maskable, size)
        for b in range(int(blocks.max()) + 1):
            current = torch.full((2,), b)
            for half in (False, True):  # a first and a second step of the block
                canvas = torch.where(blocks == b, noisy, clean)
                if half:  # commits in between: the first masked position of the block gets its token
                    first = ((canvas == MASK) & (blocks == b)).long().argmax(1)
                    canvas[rows, first] = clean[rows, first]
                hidden = cache.encode(rows, canvas, ones, blocks=blocks, current=current)
                logits = parts.head(hidden)
                expect = one_pass if not half else _logits_2l(parts, canvas, clean, maskable, size)
                here = blocks == b
                torch.testing.assert_close(logits[here], expect[here], rtol=1e-5, atol=1e-5)
            assert cache.upto.tolist() == torch.where(here, torch.arange(13), 99).min(1).values.tolist()


def test_the_sliding_window_applies_to_shared_positions_in_both_copies():
    """One sliding layer (window 2): an x_t query at position p sees x0 at p - 1 (2L indices apart,
    one position apart) and does not see x0 at p - 3 (outside the window), though both are earlier
    blocks. A full-attention layer sees both."""
    size, length, p = 1, 8, 6
    clean = _ids(1, length, seed=4)
    maskable = torch.ones_like(clean, dtype=torch.bool)
    noisy = torch.where(torch.arange(length) == p, MASK, clean)
    for layer, sees_far in (("sliding_attention", False), ("full_attention", True)):
        parts = MaskedLMParts(_modernbert([layer], local_attention=4))
        with torch.no_grad():
            base = _logits_2l(parts, noisy, clean, maskable, size)[0, p]
            for j, seen in ((p - 1, True), (p - 3, sees_far)):
                other = clean.clone()
                other[0, j] = 5 if int(clean[0, j]) != 5 else 6
                changed = _logits_2l(
                    parts, torch.where(torch.arange(length) == j, other, noisy), other, maskable, size
                )
                moved = float((changed[0, p] - base).abs().max())
                assert (moved > 1e-4) == seen, (layer, j, moved)


def test_a_bert_with_4d_masks_runs_block_mode_and_a_model_without_positions_gets_a_clear_error():
    torch.manual_seed(0)
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, initializer_range=0.2,
        )
    ).eval()  # fmt: skip
    parts = MaskedLMParts(bert)
    ids = _ids(2, 9, seed=5)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    out = {}
    for size in (None, 9, 2):
        g = torch.Generator().manual_seed(1)
        out[size] = mdlm_loss(
            parts, ids, maskable, schedule=get_schedule("linear"), mask_id=MASK, generator=g, block_size=size
        )
    torch.testing.assert_close(out[9].loss, out[None].loss, rtol=1e-5, atol=1e-5)
    assert abs(float(out[2].loss.detach()) - float(out[None].loss.detach())) > 1e-3

    class NoPositions(torch.nn.Module):  # a masked LM whose forward cannot take the shared positions
        def __init__(self):
            super().__init__()
            self.config = BertConfig(vocab_size=VOCAB)
            self.config.model_type = "custom"
            self.emb = torch.nn.Embedding(VOCAB, VOCAB)

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": self.emb(input_ids)})()

    with pytest.raises(ValueError, match="block diffusion needs ModernBERT"):
        mdlm_loss(
            MaskedLMParts(NoPositions()),
            ids,
            maskable,
            schedule=get_schedule("linear"),
            mask_id=MASK,
            block_size=2,
        )


def test_clipped_noise_levels_stay_in_their_range_and_bad_ranges_are_refused():
    g = torch.Generator().manual_seed(0)
    t = sample_times(64, generator=g, clip=(0.3, 0.8))
    assert float(t.min()) >= 0.3 and float(t.max()) < 0.8 and float(t.max() - t.min()) > 0.4
    k = sample_counts(torch.ones(64, 20, dtype=torch.bool), generator=g, clip=(0.5, 1.0))
    assert int(k.min()) >= 11 and int(k.max()) == 20  # 1 + floor(q * 20), q in [0.5, 1)
    for bad in ((0.0, 0.5), (0.6, 0.4), (0.2, 1.5)):
        with pytest.raises(ValueError, match="0 < beta < omega <= 1"):
            sample_times(4, clip=bad)
    cfg = from_dict(RunConfig, {"diffusion": {"mode": "block", "block_size": 4, "t_clip": [0.3, 0.8]}})
    assert cfg.diffusion.block_size == 4
    for bad, message in (
        ({"mode": "block"}, "block_size of at least 1"),
        ({"mode": "blocks", "block_size": 4}, "mdlm | block"),
        ({"block_size": 4}, "mode is 'mdlm'"),
        ({"mode": "block", "block_size": 4, "t_clip": [0.9, 0.1]}, "beta < omega"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_dict(RunConfig, {"diffusion": bad})


def _exact_block_nelbo(
    parts, ids: torch.Tensor, size: int, maskable: torch.Tensor | None = None
) -> torch.Tensor:
    """sum over blocks of the exact NELBO of each block given the clean earlier ones: for a block of
    m tokens, sum_S (1 / (|S| C(m, |S|))) sum_{i in S} CE_i, over every non-empty mask S of the block
    (the linear schedule's integral), each computed by the block-by-block pass."""
    length = ids.shape[1]
    blocks = block_index(torch.ones_like(ids, dtype=torch.bool) if maskable is None else maskable, size)
    total = torch.zeros(ids.shape[0], dtype=torch.float64)
    for b in range(int(blocks.max()) + 1):
        cols = (blocks[0] == b).nonzero().flatten().tolist()
        end = cols[-1] + 1
        mask, pos = causal_inputs(parts, blocks[:, :end], None)
        m = len(cols)
        for r in range(1, m + 1):
            for subset in itertools.combinations(cols, r):
                noisy = ids[:, :end].clone()
                noisy[:, list(subset)] = MASK
                logits = parts.head(parts.encode(noisy, mask, pos))[:, list(subset)].float()
                logits[..., MASK] = float("-inf")
                ce = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), ids[:, list(subset)], reduction="none"
                )
                total += ce.sum(1).double() / (r * math.comb(m, r))
    assert length == ids.shape[1]
    return total


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_block_elbo_perplexity_estimates_the_exact_bound_summed_over_blocks(estimator):
    parts = MaskedLMParts(_modernbert())
    ids = _ids(48, 6, seed=6)
    with torch.no_grad():
        exact = float(_exact_block_nelbo(parts, ids, 3).sum()) / ids.numel()
    r = elbo_perplexity(
        parts,
        ids,
        schedule=get_schedule("linear"),
        mask_id=MASK,
        t_samples=16,
        block_size=3,
        estimator=estimator,
    )
    assert 0 < r.stderr_nelbo < 0.2 * exact
    assert abs(r.nelbo_per_token - exact) < 3 * r.stderr_nelbo, (r.nelbo_per_token, exact, r.stderr_nelbo)
    # on the same draws (same seed), the block pass is really used: the whole row as one block is the
    # MDLM's number, a block of 3 another one
    same = {
        size: elbo_perplexity(
            parts,
            ids,
            schedule=get_schedule("linear"),
            mask_id=MASK,
            t_samples=4,
            block_size=size,
            estimator=estimator,
        ).nelbo_per_token
        for size in (None, 6, 3)
    }
    assert same[6] == pytest.approx(same[None], rel=1e-5) and abs(same[3] - same[None]) > 1e-3


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_per_block_noise_levels_differ_between_blocks_and_estimate_the_exact_bound(estimator, monkeypatch):
    """BD3-LM's level per block: the blocks of one row get their own t (or count k), and the training
    loss still estimates the bound summed over blocks (the exact one, every mask enumerated)."""
    import diffutron.diffusion.loss as loss_module
    from diffutron.diffusion.masking import mask_counts

    parts = MaskedLMParts(_modernbert())
    ids = _ids(48, 6, seed=6)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        exact = float(_exact_block_nelbo(parts, ids, 3).sum()) / ids.numel()
    seen = []
    real_tokens, real_counts = loss_module.mask_tokens, loss_module.mask_counts

    def spy_tokens(input_ids, mk, t, *args, **kw):
        seen.append(t)
        return real_tokens(input_ids, mk, t, *args, **kw)

    def spy_counts(*args, **kw):
        out = real_counts(*args, **kw)
        seen.append(out[2])  # the weights n_b / k_b
        return out

    monkeypatch.setattr(loss_module, "mask_tokens", spy_tokens)
    monkeypatch.setattr(loss_module, "mask_counts", spy_counts)
    draws = []
    with torch.no_grad():
        for seed in range(24):
            out = mdlm_loss(
                parts,
                ids,
                maskable,
                schedule=get_schedule("linear"),
                mask_id=MASK,
                generator=torch.Generator().manual_seed(seed),
                block_size=3,
                estimator=estimator,
            )
            draws.append(float(out.nelbo) / ids.numel())
    level = seen[0]  # [B, L]: constant inside a block, another value in the other block of the row
    assert level.shape == ids.shape
    assert torch.equal(level[:, :3], level[:, :1].expand(-1, 3)) and torch.equal(
        level[:, 3:], level[:, 3:4].expand(-1, 3)
    )
    if estimator == "time":  # stratified block-major: a row's two levels are half the range apart
        assert bool((level[:, 0] != level[:, 3]).all())
        assert float((level[:, 0] - level[:, 3]).abs().mean()) > 0.2
    else:  # counts 1..3 of 3: some rows draw the same count in both blocks, most do not
        assert int((level[:, 0] != level[:, 3]).sum()) > ids.shape[0] // 2
    mean = sum(draws) / len(draws)
    stderr = (sum((d - mean) ** 2 for d in draws) / (len(draws) - 1) / len(draws)) ** 0.5
    assert 0 < stderr < 0.2 * exact
    assert abs(mean - exact) < 3 * stderr, (mean, exact, stderr)
    # the count draw per block masks exactly k_b of each block's n_b maskable tokens, prompt untouched
    mk = torch.ones(4, 9, dtype=torch.bool)
    mk[:, :2] = False  # a prompt of two tokens: block -1
    blocks = block_index(mk, 3)
    noisy, masked, weights = mask_counts(
        _ids(4, 9), mk, MASK, generator=torch.Generator().manual_seed(0), blocks=blocks
    )
    assert not masked[:, :2].any()
    for b in range(3):
        cols = slice(2 + 3 * b, min(2 + 3 * (b + 1), 9))
        k = masked[:, cols].sum(dim=1)
        n = mk[:, cols].sum(dim=1)
        assert bool((k >= 1).all()) and torch.allclose(weights[:, cols][:, 0], n.float() / k.float())


def test_the_mode_is_saved_with_the_checkpoint_and_read_back(tmp_path, tokenizer):
    from diffutron.models.checkpoint import DiffusionSettings, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=64))  # fmt: skip
    settings = DiffusionSettings(mask_token_id=tokenizer.mask_token_id, mode="block", block_size=4)
    save_checkpoint(tmp_path / "m", model, tokenizer, settings)
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.settings.mode == "block" and loaded.settings.diffusion_block == 4
    assert block_size_of(loaded.model) == 4
    save_checkpoint(
        tmp_path / "plain", model, tokenizer, DiffusionSettings(mask_token_id=tokenizer.mask_token_id)
    )
    assert block_size_of(load_checkpoint(tmp_path / "plain").model) is None


@pytest.mark.parametrize("cache", ["none", "prefix"])
def test_block_sampling_decodes_block_by_block_and_matches_the_model_conditional(tokenizer, cache):
    """A block model's greedy answer, written by ``generate`` over several blocks, equals what one
    reaches by hand: each block decoded given only the prompt and the earlier blocks (later masks
    changed to other tokens do not change it), and the blocks are committed in order."""
    from diffutron.sampling.config import GenerationConfig
    from diffutron.sampling.engine import generate

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(
        preset_config("tiny", tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, initializer_range=0.5)
    ).double().eval()  # fmt: skip
    attach_block_size(model, 4)
    cfg = GenerationConfig(max_new_tokens=12, steps=12, block_size=0, remasking="low_confidence",
                           temperature=0.0, stop_at_eos=False, cache=cache)  # fmt: skip
    out = generate(model, tokenizer, ["Türkiye'nin başkenti"], cfg, schedule=get_schedule("linear"))
    answer = out.editable[0]
    steps = out.commit_step[0][answer]
    assert steps.shape[0] == 12
    # block by block: every position of block b is committed before any position of block b + 1
    for b in range(2):
        assert int(steps[4 * b : 4 * b + 4].max()) < int(steps[4 * b + 4 : 4 * b + 8].min())
    # the MDLM mode of the same weights writes something else: the mask changed what it sees
    attach_block_size(model, None)
    plain = generate(model, tokenizer, ["Türkiye'nin başkenti"], dataclasses.replace(cfg, block_size=4),
                     schedule=get_schedule("linear"))  # fmt: skip
    attach_block_size(model, 4)
    assert plain.token_ids != out.token_ids
    # by hand: one token per step, the most confident masked position of the current block, given the
    # prompt and earlier blocks only (the canvas is cut after the current block)
    canvas = out.canvas[0].clone()
    start = int(answer.nonzero()[0])
    canvas[answer] = tokenizer.mask_token_id
    parts = MaskedLMParts(model)
    blocks_all = torch.where(
        answer, (torch.arange(canvas.shape[0]) - start).div(4, rounding_mode="floor"), -1
    )
    for b in range(3):
        end = start + 4 * (b + 1)
        for _ in range(4):
            mask, pos = causal_inputs(parts, blocks_all[None, :end], None)
            with torch.no_grad():
                logits = parts.head(parts.encode(canvas[None, :end], mask, pos))[0].double()
            logits[:, tokenizer.mask_token_id] = float("-inf")
            probs = logits.softmax(-1)
            conf, tok = probs.max(-1)
            open_ = (canvas[:end] == tokenizer.mask_token_id) & (blocks_all[:end] == b)
            best = int(torch.where(open_, conf, -1.0).argmax())
            canvas[best] = tok[best]
    assert canvas[answer].tolist() == out.canvas[0][answer].tolist()


def test_block_sampling_refuses_infilling(tokenizer):
    from diffutron.sampling.config import GenerationConfig
    from diffutron.sampling.engine import infill

    model = _modernbert()
    attach_block_size(model, 4)
    with pytest.raises(ValueError, match="infilling needs an MDLM"):
        infill(model, tokenizer, ["Ankara <mask:2> şehridir."], GenerationConfig(max_new_tokens=4, steps=4))


def test_multiple_choice_scoring_of_a_block_model_is_its_exact_bound_and_greedy_its_block_argmax():
    """A 4-token answer is enumerated (15 masks <= 32 samples): the score equals minus the exact sum
    over the answer's blocks of 2 (the context is the clean condition). ``greedy`` asks whether each
    block, all masked given the clean earlier ones, has the answer as its argmax."""
    from diffutron.evaluation.likelihood import ContinuationScorer, EncodedPair, LikelihoodConfig

    model = _modernbert()
    parts = MaskedLMParts(model)
    context, answer = (7, 8, 9), (10, 11, 12, 13)
    ids = torch.tensor([context + answer])
    maskable = torch.tensor([[False] * 3 + [True] * 4])
    with torch.no_grad():
        exact = float(_exact_block_nelbo(parts, ids, 2, maskable)[0])
    attach_block_size(model, 2)
    scorer = ContinuationScorer(model, mask_id=MASK, pad_id=0, config=LikelihoodConfig(samples=32))
    result = scorer.score_encoded([EncodedPair(context, answer)])
    assert result.exact == [True]
    assert result.loglikelihoods[0] == pytest.approx(-exact, rel=1e-5)
    attach_block_size(model, None)
    mdlm = ContinuationScorer(model, mask_id=MASK, pad_id=0, config=LikelihoodConfig(samples=32))
    assert abs(mdlm.score_encoded([EncodedPair(context, answer)]).loglikelihoods[0] + exact) > 1e-3
    # greedy: the block argmax answer, found by hand with the block-by-block pass
    best = list(ids[0, :3])
    for b in range(2):
        canvas = torch.tensor([best + [MASK, MASK]])
        blocks = block_index(torch.tensor([[False] * 3 + [True] * (2 * b + 2)]), 2)
        mask, pos = causal_inputs(parts, blocks, None)
        with torch.no_grad():
            logits = parts.head(parts.encode(canvas, mask, pos))[0, -2:].float()
        logits[:, MASK] = float("-inf")
        best += logits.argmax(-1).tolist()
    greedy_answer = tuple(int(t) for t in best[3:])
    attach_block_size(model, 2)
    scorer.encode = lambda requests: [EncodedPair(context, a) for _, a in requests]
    assert scorer.greedy([("", greedy_answer), ("", tuple(t + 1 for t in greedy_answer))]) == [True, False]


def test_an_sft_run_in_block_mode_trains_with_the_prompt_clean_and_saves_the_mode(tmp_path, monkeypatch):
    """The training loop calls the loss in block mode on SFT rows whose prompt is not maskable (so it is
    the clean condition and the answer is cut into blocks from its start), evaluates, and saves a
    model that loads as a block model."""
    import json

    from conftest import MICRO

    from diffutron.config import ModelConfig, SftConfig, TokenizerConfig, TrainingConfig
    from diffutron.models.checkpoint import load_checkpoint
    from diffutron.training import loop as loop_module
    from diffutron.training import train

    rows = [
        {"instruction": f"Soru {i}: Türkiye'nin başkenti neresidir?", "output": f"Ankara, {i}. cevap olarak."}
        for i in range(24)
    ]
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(r["instruction"] + " " + r["output"] for r in rows) + "\n", encoding="utf-8")
    cfg = RunConfig(
        model=ModelConfig(preset="tiny", overrides=dict(MICRO)),
        tokenizer=TokenizerConfig(vocab_size=300),
        data=from_dict(RunConfig, {"data": {"sources": [str(corpus)]}}).data,
        sft=SftConfig(sources=[{"path": str(data), "format": "alpaca"}], max_length=96, val_fraction=0.2),
        diffusion=from_dict(RunConfig, {"diffusion": {"mode": "block", "block_size": 8, "t_clip": [0.2, 0.9]}}).diffusion,
        training=TrainingConfig(max_steps=2, batch_size=4, warmup_steps=1, eval_every=2, eval_blocks=4,
                                eval_t_samples=2, save_every=0, log_every=1),
    )  # fmt: skip
    calls = []
    real = loop_module.mdlm_loss

    def spy(parts, ids, maskable, **kw):
        calls.append((maskable.clone(), kw["block_size"], kw["clip"]))
        return real(parts, ids, maskable, **kw)

    monkeypatch.setattr(loop_module, "mdlm_loss", spy)
    result = train(cfg, tmp_path / "run", progress=False)
    assert len(calls) == 2 and all(size == 8 and clip == [0.2, 0.9] for _, size, clip in calls)
    maskable = calls[0][0]
    first = maskable.long().argmax(1)
    assert (first > 0).all()  # a prompt before every answer: never maskable
    blocks = block_index(maskable, 8)
    assert (blocks[torch.arange(len(first)), first] == 0).all() and (blocks[:, 0] == -1).all()
    loaded = load_checkpoint(result.model_dir)
    assert loaded.settings.mode == "block" and block_size_of(loaded.model) == 8


@pytest.mark.parametrize("remasking", ["random", "low_confidence", "margin", "entropy", "threshold"])
def test_every_commit_rule_decodes_a_block_model_block_by_block_and_the_cache_changes_nothing(
    tokenizer, remasking
):
    """Any commit rule (threshold included, sampled at temperature 1) fills block b before block b + 1,
    and the exact block cache writes the same tokens as re-encoding (float64: no near-ties)."""
    from diffutron.sampling.config import GenerationConfig
    from diffutron.sampling.engine import generate

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(
        preset_config("tiny", tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, initializer_range=0.5)
    ).double().eval()  # fmt: skip
    attach_block_size(model, 4)
    prompts = ["Türkiye'nin başkenti", "Efendiler, milletimiz büyük"]
    out = {}
    for cache in ("none", "prefix"):
        cfg = GenerationConfig(max_new_tokens=10, steps=10, remasking=remasking, temperature=1.0, seed=3,
                               threshold=0.5, stop_at_eos=False, cache=cache)  # fmt: skip
        out[cache] = generate(model, tokenizer, prompts, cfg, schedule=get_schedule("linear"))
    assert out["none"].token_ids == out["prefix"].token_ids
    for row in range(2):
        steps = out["prefix"].commit_step[row][out["prefix"].editable[row]]
        assert steps.shape[0] == 10
        for b in range(2):
            assert int(steps[4 * b : 4 * b + 4].max()) < int(steps[4 * b + 4 : 4 * b + 8].min())


def test_the_eager_attention_gets_an_additive_mask_with_the_same_result_and_others_are_switched_to_sdpa():
    """transformers builds the mask in the implementation's format (eager: additive floats): the
    one-pass logits agree with sdpa's; an implementation that ignores 4D masks is switched to sdpa."""
    from diffutron.diffusion.block import check_backbone

    clean = _ids(2, 10, seed=8)
    maskable = torch.ones_like(clean, dtype=torch.bool)
    noisy = torch.where(
        torch.rand(clean.shape, generator=torch.Generator().manual_seed(2)) < 0.5, MASK, clean
    )
    logits = {}
    for impl in ("sdpa", "eager"):
        model = _modernbert(local_attention=4)
        model.set_attn_implementation(impl)
        parts = MaskedLMParts(model)
        with torch.no_grad():
            logits[impl] = _logits_2l(parts, noisy, clean, maskable, 3)
        assert model.config._attn_implementation == impl
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=1e-5, atol=1e-5)
    model = _modernbert()
    model.config._attn_implementation_internal = "flash_attention_2"  # as loaded with it; not installed here
    check_backbone(MaskedLMParts(model))
    assert model.config._attn_implementation == "sdpa"


# -- k noised copies sharing one clean copy: [x_t1 ; ... ; x_tk ; x0] ----------------------------------


def test_noised_copies_see_their_own_block_and_the_clean_copy_never_each_other():
    maskable = torch.tensor([[False, True, True, True, True, True]])  # a 1-token prompt: block -1
    blocks = block_index(maskable, 2)
    noisy = torch.tensor([[10] * 6, [20] * 6])  # copy 0 and copy 1 of the one row
    ids, pos, allowed = training_layout(noisy, torch.full((1, 6), 30), blocks)
    assert ids.tolist() == [[10] * 6 + [20] * 6 + [30] * 6] and pos.tolist() == list(range(6)) * 3
    a = allowed[0]
    for q, k in itertools.product(range(18), range(18)):
        cq, ck = q // 6, k // 6  # 0, 1: noised copies; 2: the clean copy
        bq, bk = int(blocks[0, q % 6]), int(blocks[0, k % 6])
        if cq < 2 and ck < 2:
            want = cq == ck and bq == bk
        elif cq < 2:
            want = bk < bq
        elif ck < 2:
            want = False
        else:
            want = bk <= bq
        assert bool(a[q, k]) == want, (q, k)
    with pytest.raises(ValueError, match="whole number of copies"):
        training_layout(torch.zeros(3, 6, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long), blocks)


@pytest.mark.parametrize("copies", [2, 3])
def test_each_noised_copy_is_scored_as_in_its_own_two_copy_pass(copies):
    """k copies in one pass of (k+1)L tokens give, position by position, the weighted CE of k separate
    [x_tj ; x0] passes: with a prompt, padding and a sliding-window layer."""
    from diffutron.diffusion.loss import weighted_masked_nll

    parts = MaskedLMParts(_modernbert(local_attention=4))
    ids = _ids(3, 10, seed=4)
    attention = torch.ones_like(ids)
    attention[1, 8:] = 0  # padding at the end of one row
    maskable = attention.bool().clone()
    maskable[:, :2] = False  # a prompt of two tokens
    gen = torch.Generator().manual_seed(7)
    masked = (torch.rand(copies * 3, 10, generator=gen) < 0.5) & maskable.repeat(copies, 1)
    masked[:, 2] = True  # every copy scores something
    noisy = torch.where(masked, MASK, ids.repeat(copies, 1))
    weights = torch.rand(copies * 3, generator=gen) + 0.5

    def nll(noisy_rows, masked_rows, w):
        return weighted_masked_nll(
            parts,
            ids,
            noisy_rows,
            masked_rows,
            attention,
            w,
            suppress_id=MASK,
            block_size=3,
            maskable=maskable,
        )

    with torch.no_grad():
        together = nll(noisy, masked, weights)
        one_by_one = torch.cat(
            [
                nll(noisy[j * 3 : (j + 1) * 3], masked[j * 3 : (j + 1) * 3], weights[j * 3 : (j + 1) * 3])
                for j in range(copies)
            ]
        )
    assert together.shape == (copies * 3, 10) and bool((together[masked] > 0).all())
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-5)
    # the copies really differ (another draw), so a mix-up of copies or rows would show
    assert not torch.allclose(together[:3], together[3:6])


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_two_noised_copies_estimate_the_same_exact_bound_and_one_copy_is_todays_loss(estimator):
    parts = MaskedLMParts(_modernbert())
    ids = _ids(48, 6, seed=6)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        exact = float(_exact_block_nelbo(parts, ids, 3).sum()) / ids.numel()

    def loss(seed: int, **kw):
        return mdlm_loss(
            parts,
            ids,
            maskable,
            schedule=get_schedule("linear"),
            mask_id=MASK,
            generator=torch.Generator().manual_seed(seed),
            block_size=3,
            estimator=estimator,
            **kw,
        )

    with torch.no_grad():
        assert torch.equal(loss(0, copies=1).loss, loss(0).loss)  # k = 1: the same draws, the same pass
        draws = []
        for seed in range(16):
            out = loss(seed, copies=2)
            assert out.masked.shape == (96, 6)
            # the loss is the mean of the two copies' token-normalised losses
            assert float(out.loss) == pytest.approx(float(out.nelbo) / (2 * ids.numel()), rel=1e-6)
            draws.append(float(out.loss))
    mean = sum(draws) / len(draws)
    stderr = (sum((d - mean) ** 2 for d in draws) / (len(draws) - 1) / len(draws)) ** 0.5
    assert 0 < stderr < 0.2 * exact
    assert abs(mean - exact) < 3 * stderr, (mean, exact, stderr)
    out = loss(0, copies=2)
    out.loss.backward()  # one backward through the (k+1)L pass
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in parts.parameters())


def test_noised_copies_are_refused_without_block_mode_or_below_one():
    parts = MaskedLMParts(_modernbert())
    ids = _ids(2, 6)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    kw = {"schedule": get_schedule("linear"), "mask_id": MASK}
    with pytest.raises(ValueError, match="block mode"):
        mdlm_loss(parts, ids, maskable, copies=2, **kw)
    with pytest.raises(ValueError, match="positive integer"):
        mdlm_loss(parts, ids, maskable, copies=0, block_size=3, **kw)
    with pytest.raises(ConfigError, match="noised copies"):
        from_dict(RunConfig, {"diffusion": {"noised_copies": 2}})
    cfg = from_dict(RunConfig, {"diffusion": {"mode": "block", "block_size": 4, "noised_copies": 2}})
    assert cfg.diffusion.noised_copies == 2
