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

from diffutron.sampling import CHAT_STOP, GenerationConfig, generate
from diffutron.sampling.batch import DecodeBatch
from diffutron.sampling.prompts import encode_prompt
from diffutron.text.chat import format_chat

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


def test_a_stop_string_in_the_prompt_or_an_earlier_turn_does_not_end_the_answer(tokenizer):
    """Only the generated text is searched: the earlier turn's ``[/Answer]`` and a word of the prompt
    are there from the start, and the answer (committed left to right) must still be written whole."""
    messages = [
        {"role": "user", "content": "Başkent neresi?"},
        {"role": "assistant", "content": "Ankara."},
        {"role": "user", "content": "Peki en kalabalık şehir?"},
    ]
    prompt = format_chat(messages, add_generation_prompt=True)
    assert CHAT_STOP[0] in prompt and "kalabalık" in prompt
    answer = tokenizer("İstanbul çok güzel bir şehir", add_special_tokens=False)["input_ids"]
    n0 = len(encode_prompt(tokenizer, prompt))
    rows = {n0 + i: confident(t, 0.9 - 0.05 * i) for i, t in enumerate(answer)}  # left to right
    model = FixedLogits(make_table(tokenizer, n0 + len(answer), rows), tokenizer.mask_token_id)
    n = len(answer)
    cfg = GenerationConfig(max_new_tokens=n, steps=n, block_size=0, stop=(*CHAT_STOP, "kalabalık"))
    out = generate(model, tokenizer, [prompt], cfg)
    assert out.token_ids[0] == answer and out.texts[0] == tokenizer.decode(answer, skip_special_tokens=True)
    assert out.row_passes == [n]  # not stopped early
    # the same machinery does stop at a stop string the answer writes, and cuts it off
    cut = generate(
        model, tokenizer, [prompt], GenerationConfig(max_new_tokens=n, steps=n, block_size=0, stop=("şehir",))
    )
    assert "şehir" not in cut.texts[0] and cut.texts[0].strip() and out.texts[0].startswith(cut.texts[0])


def decode_in_one_batch(model, tokenizer, jobs: list[tuple[list[int], GenerationConfig]]) -> list[list[int]]:
    """The answers of rows decoded together in one ``DecodeBatch`` (the server's path), each with its settings."""
    batch = DecodeBatch(model, tokenizer)
    rows = [batch.add(p, c) for p, c in jobs]
    while not all(r.done for r in rows):
        batch.step()
    return [r.output.token_ids[0] for r in rows]


# one setting changed at a time from BASE_SETTINGS; each change alone gives another answer on the table below
SETTING_CHANGES = {
    "temperature": {"temperature": 0.0},
    "top_k": {"top_k": 1},
    "top_p": {"top_p": 0.3},
    "repetition_penalty": {"repetition_penalty": 3.0},
}
BASE_SETTINGS = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=7, stop_at_eos=False)


def test_rows_that_differ_in_one_sampling_setting_each_get_their_alone_output(tokenizer):
    """Rows are proposed in groups of equal settings; a group key that forgot a setting would give a
    row its neighbour's settings. The fixed-logits stand-in's logits do not depend on the batch, so
    batched and alone compare exactly on any CPU."""
    n, a = 6, 200
    # three tokens per answer position, all probabilities distinct (no ties in the commit order);
    # token a is also in the prompt: a repetition penalty turns it away
    probs = {
        2 + i: {a: 0.46 - 0.011 * i, a + 1: 0.31 - 0.0037 * i, a + 2: 0.23 + 0.0147 * i} for i in range(n)
    }
    values = [p for row in probs.values() for p in row.values()]
    assert len(set(values)) == len(values)
    model = FixedLogits(make_table(tokenizer, 2 + n, probs), tokenizer.mask_token_id)
    prompt = [tokenizer.bos_token_id, a]
    common = dict(max_new_tokens=n, steps=n, block_size=0, **BASE_SETTINGS)
    configs = [GenerationConfig(**common)] + [
        GenerationConfig(**{**common, **c}) for c in SETTING_CHANGES.values()
    ]
    alone = [decode_in_one_batch(model, tokenizer, [(prompt, c)])[0] for c in configs]
    for name, answer in zip(SETTING_CHANGES, alone[1:], strict=True):
        assert answer != alone[0], f"changing {name} alone changes nothing here: the check would be empty"
    together = decode_in_one_batch(model, tokenizer, [(prompt, c) for c in configs])
    assert together == alone
