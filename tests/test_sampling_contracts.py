"""Contracts of the sampling loop. A batch gives each row what that row gives alone (padding unseen,
one row's end not the others'), and a commit rule that stops committing fails instead of spinning.

Two stand-ins make rows differ for sure: a fixed-logits table (``test_sampling_rules.FixedLogits``)
read at different absolute positions by prompts of different lengths, and a model whose proposals
depend on how many positions it attends to. A real micro ModernBERT with a wider initialisation
(the default one writes the same token everywhere, whatever the prompt) checks the same on real
attention.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_sampling_rules import BASE, FixedLogits, confident, make_table
from torch import nn

from diffutron.sampling import GenerationConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


def prompts_of(tokenizer, *lengths: int) -> list[list[int]]:
    """Prompts of the given lengths (<bos> included), token ids only."""
    return [[tokenizer.bos_token_id, *range(50, 50 + n - 1)] for n in lengths]


def one_by_one(model, tokenizer, prompts, cfg):
    return [generate(model, tokenizer, [p], cfg) for p in prompts]


def test_one_row_ending_early_leaves_the_other_rows_running(tokenizer):
    eos = tokenizer.eos_token_id
    # by absolute position: the short prompt's answer (from 2) meets the end token at 3, the long
    # prompt's answer (from 4) never does
    rows = {
        2: confident(60, 0.9),
        3: confident(eos, 0.99),
        **{p: confident(100 + p, 0.8 - 0.01 * p) for p in range(4, 10)},
    }
    model = FixedLogits(make_table(tokenizer, 10, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=6, steps=6, block_size=0)
    prompts = prompts_of(tokenizer, 2, 4)
    together = generate(model, tokenizer, prompts, cfg)
    assert together.token_ids == [[60], [104, 105, 106, 107, 108, 109]]
    assert together.row_passes == [2, 6]  # the first row stops after two passes, the second goes on
    for i, alone in enumerate(one_by_one(model, tokenizer, prompts, cfg)):
        assert alone.token_ids[0] == together.token_ids[i] and alone.row_passes[0] == together.row_passes[i]


class CountsAttention(nn.Module):
    """Proposes at position i the token 100 + (attended positions + i) % 300: its output changes as soon
    as it sees one more (padding) position. ``attention_mask=None`` means every position is real."""

    def __init__(self, vocab: int, width: int):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=width, model_type="counts")

    def forward(self, input_ids, attention_mask=None):
        b, w = input_ids.shape
        seen = torch.full((b,), w) if attention_mask is None else attention_mask.sum(1)
        logits = torch.full((b, w, self.config.vocab_size), BASE)
        tok = 100 + (seen[:, None] + torch.arange(w)[None, :]) % 300
        logits.scatter_(2, tok[..., None], 0.0)
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("remasking", ["low_confidence", "threshold"])
def test_padding_is_never_attended_to(tokenizer, remasking):
    model = CountsAttention(len(tokenizer), 64)
    cfg = GenerationConfig(max_new_tokens=5, steps=5, block_size=0, remasking=remasking, stop_at_eos=False)
    prompts = prompts_of(tokenizer, 2, 7, 4)  # rows 0 and 2 are padded in the batch
    together = generate(model, tokenizer, prompts, cfg)
    alone = one_by_one(model, tokenizer, prompts, cfg)
    assert [a.token_ids[0] for a in alone] == together.token_ids
    assert alone[0].token_ids[0] == [100 + 7 + i for i in range(2, 7)]  # 7 positions seen, not 12


def test_batched_generation_equals_one_by_one_on_a_model_that_reads_its_context(reading_model, tokenizer):
    prompts = ["Türkiye", "İstanbul Boğazı'nın iki yakası", "Denizin kıyısında oturup çayımızı"]
    for cfg in (
        GenerationConfig(max_new_tokens=8, steps=8, block_size=8, stop_at_eos=False),
        GenerationConfig(max_new_tokens=8, steps=8, block_size=4, remasking="threshold", threshold=0.2),
    ):
        together = generate(reading_model, tokenizer, prompts, cfg)
        assert len({tuple(t) for t in together.token_ids}) == len(prompts)  # the rows do differ
        for i, alone in enumerate(one_by_one(reading_model, tokenizer, prompts, cfg)):
            assert alone.token_ids[0] == together.token_ids[i]


@pytest.mark.parametrize("remasking, rule", [("threshold", "above_threshold"), ("margin", "top_k_per_row")])
def test_a_commit_rule_that_commits_nothing_fails_instead_of_looping_forever(
    tokenizer, monkeypatch, remasking, rule
):
    from diffutron.sampling import engine

    def nothing(scores, candidates, **kwargs):
        return torch.zeros_like(candidates)

    monkeypatch.setattr(engine, rule, nothing)
    rows = {p: confident(200 + p, 0.5) for p in range(2, 11)}
    model = FixedLogits(make_table(tokenizer, 11, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=8, steps=4, block_size=4, remasking=remasking, threshold=0.9)
    with pytest.raises(RuntimeError, match="no progress.*at least one token"):
        generate(model, tokenizer, prompts_of(tokenizer, 2, 3), cfg)
    assert model.calls <= 8 + 2 * 4  # stopped at the cap: editable positions + blocks x steps
