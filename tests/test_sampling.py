import pytest
import torch

from diffutron.diffusion import get_schedule
from diffutron.sampling import GenerationConfig, generate
from diffutron.sampling.engine import _apply_repetition_penalty, _reveal_counts


def test_reveal_counts_follow_the_schedule_and_sum_to_the_block():
    assert _reveal_counts(32, 16, get_schedule("linear")) == [2] * 16
    counts = _reveal_counts(32, 8, get_schedule("cosine"))
    assert sum(counts) == 32 and counts[0] < counts[-1]  # cosine reveals slowly first


def test_generation_fills_every_position_and_respects_blocks(micro_model, tokenizer):
    cfg = GenerationConfig(max_new_tokens=16, steps=16, block_size=8, stop_at_eos=False)
    out = generate(micro_model.eval(), tokenizer, ["Ankara'da hava"], cfg)
    n = out.prompt_lengths[0]
    steps = out.commit_step[0, n : n + 16]
    assert (steps >= 0).all() and out.forward_passes == 16
    assert steps[:8].max() < steps[8:].min()  # the first block is finished before the second starts
    assert (out.canvas[0] != tokenizer.mask_token_id).all()
    assert (out.commit_step[0, :n] == -1).all()  # the prompt is never touched


def test_batched_generation_equals_one_by_one(micro_model, tokenizer):
    prompts = ["Türkiye", "İstanbul Boğazı'nın iki yakası"]
    cfg = GenerationConfig(max_new_tokens=8, steps=8, block_size=8, stop_at_eos=False)
    together = generate(micro_model.eval(), tokenizer, prompts, cfg)
    for i, p in enumerate(prompts):
        alone = generate(micro_model, tokenizer, [p], cfg)
        assert alone.token_ids[0] == together.token_ids[i]


def test_seeds_reproduce_sampled_outputs(micro_model, tokenizer):
    cfg = GenerationConfig(
        max_new_tokens=8, steps=4, block_size=8, temperature=1.0, seed=3, stop_at_eos=False
    )
    a = generate(micro_model.eval(), tokenizer, ["Merhaba"], cfg)
    b = generate(micro_model, tokenizer, ["Merhaba"], cfg)
    assert a.token_ids == b.token_ids


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 3.0, 1.0]], dtype=torch.float64)
    canvas = torch.tensor([[0, 1, 3]])  # ids 0 (pad), 1 and 3 present
    out = _apply_repetition_penalty(logits, torch.tensor([0]), canvas, 2.0, mask_id=2, pad_id=0)
    assert out.tolist() == [[2.0, -4.0, 3.0, 0.5]]


def test_prompt_longer_than_the_context_is_a_clear_error(micro_model, tokenizer):
    with pytest.raises(ValueError, match="context"):
        generate(micro_model, tokenizer, [list(range(5, 300))], GenerationConfig(max_new_tokens=8))
