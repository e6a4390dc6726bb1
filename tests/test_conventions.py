"""One convention for training and use: the <bos> framing, windows inside a text, the real context."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from diffutron.data import build_blocks
from diffutron.data.sft import encode_conversations
from diffutron.evaluation.likelihood import encode_pair
from diffutron.evaluation.perplexity import text_windows
from diffutron.sampling.prompts import encode_prompt
from diffutron.text.chat import format_chat

DOC = "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı."
CONV = [{"role": "user", "content": "Başkent neresidir?"}, {"role": "assistant", "content": "Ankara."}]


def test_bos_framing_agrees_across_packing_sft_sampling_scoring_and_perplexity(tokenizer):
    framed = tokenizer(DOC)["input_ids"]  # the tokenizer's own template: <bos> text <eos>
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert framed[0] == bos and framed[-1] == eos
    # pre-training: every packed document is framed the same way
    blocks = build_blocks([DOC] * 3, tokenizer, block_size=len(framed), progress=False)
    assert [list(b) for b in blocks] == [framed] * 3
    # sampling: a prompt starts like a document
    assert encode_prompt(tokenizer, DOC) == framed[:-1]
    # multiple-choice scoring: the same <bos> before the context and <eos> after the answer
    pair = encode_pair(tokenizer, DOC[:20], DOC[20:])
    assert pair.ids == framed
    # perplexity: a document that fits is one window, exactly the packed document
    ids, maskable, _, _ = text_windows(tokenizer, [DOC], max_length=64)
    assert ids[0, : len(framed)].tolist() == framed
    assert not maskable[0, 0] and not maskable[0, len(framed) - 1] and maskable[0, 1 : len(framed) - 1].all()
    # SFT: rows start with one <bos>, like the prompt a sampler encodes
    rows, plen, _ = encode_conversations([CONV], tokenizer, max_length=64)
    prompt = format_chat(CONV[:1], add_generation_prompt=True)
    assert rows[0, : plen[0]].tolist() == encode_prompt(tokenizer, prompt)


def test_sft_gives_one_bos_when_the_chat_template_renders_it(tokenizer):
    def render(messages, add_generation_prompt):  # a template that writes the bos token itself
        return tokenizer.bos_token + format_chat(messages, add_generation_prompt=add_generation_prompt)

    rows, plen, _ = encode_conversations([CONV], tokenizer, max_length=64, render=render)
    row = rows[0].tolist()
    assert row[0] == tokenizer.bos_token_id and row[1] != tokenizer.bos_token_id
    assert row[: plen[0]] == encode_prompt(tokenizer, render(CONV[:1], True))  # what inference sends


def test_perplexity_windows_inside_a_text_are_not_framed_as_documents(tokenizer):
    text = " ".join([DOC] * 6)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, maskable, attention, _ = text_windows(tokenizer, [text], max_length=32)
    rows = [ids[i, : int(attention[i].sum())].tolist() for i in range(ids.shape[0])]
    stream = [t for r in sorted(rows, key=lambda r: r[0] != tokenizer.bos_token_id) for t in r]
    assert sorted(stream) == sorted([tokenizer.bos_token_id, *body, tokenizer.eos_token_id])
    assert sum(r.count(tokenizer.eos_token_id) for r in rows) == 1  # no <eos> in the middle of the text
    assert sum(r.count(tokenizer.bos_token_id) for r in rows) == 1
    assert int(maskable.sum()) == len(body)  # every text token is scored once, no special token


def test_perplexity_windows_follow_the_training_length_from_the_checkpoint(tokenizer, micro_model):
    from diffutron.diffusion import get_schedule
    from diffutron.evaluation import text_perplexity

    text = " ".join([DOC] * 5)
    kw = dict(mask_id=tokenizer.mask_token_id, schedule=get_schedule("linear"), t_samples=1)
    trained_32 = text_perplexity(micro_model, tokenizer, [text], context_length=32, **kw)
    n = len(tokenizer(text)["input_ids"])
    assert 32 < n <= 256
    assert trained_32.windows == -(-n // 32)
    whole = text_perplexity(micro_model, tokenizer, [text], **kw)  # no record: the model's 256
    assert whole.windows == 1


def test_rolling_windows_frame_only_the_ends_of_the_text():
    from diffutron.evaluation.harness import rolling_windows

    ids = list(range(100, 150))
    pairs = rolling_windows(ids, 20, (2,), (1,))
    assert [t for p in pairs for t in p.answer] == ids  # every token scored once, in order
    assert pairs[0].prefix == (2,) and all(p.prefix == () for p in pairs[1:] if p.context[0] != 100)
    assert pairs[-1].suffix == (1,) and all(p.suffix == () for p in pairs[:-1])
    assert all(len(p.ids) <= 20 for p in pairs)


@pytest.mark.parametrize(
    "kind, mpe, limit", [("roberta", 514, 512), ("xlm-roberta", 514, 512), ("modernbert", 512, 512)]
)
def test_context_limit_subtracts_the_roberta_padding_offset(kind, mpe, limit):
    from diffutron.models.heads import context_limit

    model = torch.nn.Linear(1, 1)
    model.config = SimpleNamespace(model_type=kind, max_position_embeddings=mpe, pad_token_id=1)
    assert context_limit(model) == limit


def test_the_sampler_refuses_a_canvas_past_a_roberta_models_real_context(tokenizer):
    from transformers import RobertaConfig, RobertaForMaskedLM

    from diffutron.sampling import GenerationConfig, generate

    cfg = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=18, pad_token_id=1,
    )  # fmt: skip
    model = RobertaForMaskedLM(cfg).eval()  # 16 usable positions
    prompt = [tokenizer.bos_token_id, 50, 51, 52]
    with pytest.raises(ValueError, match="context of 16"):
        generate(model, tokenizer, [prompt], GenerationConfig(max_new_tokens=13, steps=1, block_size=0))
    out = generate(model, tokenizer, [prompt], GenerationConfig(max_new_tokens=12, steps=1, block_size=0))
    assert len(out.token_ids) == 1


def test_perplexity_shows_progress_while_tokenising_and_scoring(tokenizer, micro_model, capfd):
    from diffutron.diffusion import get_schedule
    from diffutron.evaluation import text_perplexity

    kw = dict(mask_id=tokenizer.mask_token_id, schedule=get_schedule("linear"), t_samples=1)
    text_perplexity(micro_model, tokenizer, [DOC] * 3, progress=True, **kw)
    err = capfd.readouterr().err
    assert "tokenising" in err and "3/3" in err and "ELBO" in err
    text_perplexity(micro_model, tokenizer, [DOC] * 3, progress=False, **kw)
    assert capfd.readouterr().err == ""
