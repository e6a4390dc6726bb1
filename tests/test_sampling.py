"""The sampling engine on a real (randomly initialised) micro ModernBERT: blocks, batching, the sparse
head, streaming, presets, the text helpers."""

import dataclasses

import pytest
import torch

from diffutron.diffusion import get_schedule
from diffutron.sampling import GenerationConfig, generate, infill, render_partial, stream
from diffutron.sampling.commit import reveal_counts
from diffutron.sampling.proposals import apply_repetition_penalty, tokens_present


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread, and on a busy machine thread hand-offs cost
    more than the work: one thread keeps these tests fast and their timing steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reveal_counts_follow_the_schedule_and_sum_to_the_block():
    assert reveal_counts(32, 16, get_schedule("linear")).tolist() == [2] * 16
    counts = reveal_counts(32, 8, get_schedule("cosine")).tolist()
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


def test_batched_generation_equals_one_by_one(reading_model, tokenizer):
    prompts = ["Türkiye", "İstanbul Boğazı'nın iki yakası"]
    cfg = GenerationConfig(max_new_tokens=8, steps=8, block_size=8, stop_at_eos=False)
    together = generate(reading_model, tokenizer, prompts, cfg)
    assert together.token_ids[0] != together.token_ids[1]  # the model reads its prompt
    for i, p in enumerate(prompts):
        alone = generate(reading_model, tokenizer, [p], cfg)
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
    canvas = torch.tensor([[1, 3, 2, 0]])  # ids 1 and 3 present, 2 is the mask, 0 is padding
    present = tokens_present(canvas, torch.tensor([[1, 1, 1, 0]]), mask_id=2, vocab_size=4)
    assert present.tolist() == [[False, True, False, True]]
    out = apply_repetition_penalty(logits, present, 2.0)
    assert out.tolist() == [[2.0, -4.0, 3.0, 0.5]]


def test_prompt_longer_than_the_context_is_a_clear_error(micro_model, tokenizer):
    with pytest.raises(ValueError, match="context"):
        generate(micro_model, tokenizer, [list(range(5, 300))], GenerationConfig(max_new_tokens=8))


def test_batched_equals_one_by_one_for_threshold_early_stop_and_infill(reading_model, tokenizer):
    model = reading_model
    prompts = ["Türkiye", "Denizin kıyısında oturup çayımızı"]
    for cfg in (
        GenerationConfig(max_new_tokens=12, steps=12, block_size=4, remasking="threshold", threshold=0.05),
        GenerationConfig(
            max_new_tokens=12, steps=6, block_size=6, remasking="margin", repetition_penalty=1.3
        ),
    ):
        together = generate(model, tokenizer, prompts, cfg)
        for i, p in enumerate(prompts):
            alone = generate(model, tokenizer, [p], cfg)
            assert alone.token_ids[0] == together.token_ids[i]
            assert alone.row_passes[0] == together.row_passes[i]
    texts = ["Ankara <mask:2> başkentidir.", "Yarın hava [...3], ama akşama doğru yağmur bekleniyor."]
    together = infill(model, tokenizer, texts, GenerationConfig(steps=8))
    for i, t in enumerate(texts):
        assert infill(model, tokenizer, [t], GenerationConfig(steps=8)).texts[0] == together.texts[i]


def test_committed_tokens_never_change_and_prompts_are_never_written(micro_model, tokenizer):
    cfg = GenerationConfig(max_new_tokens=16, steps=8, block_size=8, temperature=1.0, stop_at_eos=False)
    first: dict[tuple[int, int], int] = {}
    prompts = ["Merhaba", "Üniversiteyi bitirdikten sonra"]
    mask = tokenizer.mask_token_id
    previous = None
    for event in stream(micro_model.eval(), tokenizer, prompts, cfg):
        canvas = event.canvas
        if previous is not None:
            changed = canvas != previous
            assert (previous[changed] == mask).all()  # only masks are ever written
            assert (changed == event.committed).all() or event.done
        for b, i in event.committed.nonzero().tolist():
            first.setdefault((b, i), int(canvas[b, i]))
        for (b, i), tok in first.items():
            assert int(canvas[b, i]) == tok
        previous = canvas
    out = event.output
    for b, n in enumerate(out.prompt_lengths):
        assert (out.commit_step[b, :n] == -1).all()


def test_output_head_runs_only_on_still_masked_positions_of_the_block(micro_model, tokenizer, monkeypatch):
    from diffutron.models.heads import MaskedLMParts

    rows: list[int] = []
    original = MaskedLMParts.head
    monkeypatch.setattr(MaskedLMParts, "head", lambda self, h: rows.append(h.shape[0]) or original(self, h))
    cfg = GenerationConfig(max_new_tokens=16, steps=16, block_size=8, stop_at_eos=False)
    generate(micro_model.eval(), tokenizer, ["Ankara'da hava"], cfg)
    assert rows == [8, 7, 6, 5, 4, 3, 2, 1] * 2


def test_sparse_head_gives_the_same_text_as_full_logits(micro_model, tokenizer, monkeypatch):
    from conftest import exact_enough

    import diffutron.sampling.engine as engine
    from diffutron.models.heads import MaskedLMParts

    model = exact_enough(micro_model.eval())  # the head over 8 rows or over all: other matmul shapes
    cfg = GenerationConfig(
        max_new_tokens=16, steps=16, block_size=8, repetition_penalty=1.2, stop_at_eos=False
    )
    sparse = generate(model, tokenizer, ["Öğretmenimiz bugün"], cfg)

    class Full(MaskedLMParts):
        def __init__(self, model):
            super().__init__(model)
            self.sparse_head = False

    monkeypatch.setattr(engine, "MaskedLMParts", Full)
    full = generate(model, tokenizer, ["Öğretmenimiz bugün"], cfg)
    assert full.token_ids == sparse.token_ids


def test_presets_match_the_published_settings():
    from diffutron.sampling import PRESETS, preset

    d = PRESETS["diffutron"]
    assert (d.steps, d.max_new_tokens, d.block_size, d.temperature, d.repetition_penalty, d.remasking) == (
        64,
        64,
        32,
        0.1,
        1.2,
        "low_confidence",
    )
    assert PRESETS["fast"].remasking == "threshold"
    assert preset("fast", max_new_tokens=8).max_new_tokens == 8 and PRESETS["fast"].max_new_tokens == 64
    with pytest.raises(ValueError, match="preset"):
        preset("slow")


def test_bad_settings_are_clear_errors(micro_model, tokenizer):
    with pytest.raises(ValueError, match="remasking"):
        generate(micro_model, tokenizer, ["a"], GenerationConfig(remasking="confidence"))
    with pytest.raises(ValueError, match="hole"):
        infill(micro_model, tokenizer, ["no holes here"])


def test_holes_chat_template_and_partial_views(tokenizer, monkeypatch):
    from diffutron.sampling import chat_prompt, render_partial
    from diffutron.sampling.prompts import encode_with_holes

    mask = tokenizer.mask_token_id
    ids, holes = encode_with_holes(
        tokenizer, "Ankara <mask> şehridir. [...] Son [...3]<mask:2>", mask, span=2
    )
    assert [b - a for a, b in holes] == [2, 2, 3, 2]
    assert ids[0] == tokenizer.bos_token_id and all(ids[i] == mask for a, b in holes for i in range(a, b))
    before = tokenizer.decode(ids[1 : holes[0][0]])
    assert before == "Ankara"  # the space moved into the hole
    assert tokenizer.decode(ids[holes[0][1] : holes[1][0]]) == " şehridir."
    assert render_partial(tokenizer, ids[1:], mask, "_").startswith("Ankara__ şehridir.__ Son")

    msgs = [
        {"role": "system", "content": "Yardımsever ol."},
        {"role": "user", "content": "Merhaba"},
        {"role": "assistant", "content": "Selam!"},
        {"role": "user", "content": "Nasılsın?"},
    ]
    text = chat_prompt(tokenizer, msgs)  # no chat_template on this tokenizer: Diffutron's
    assert text == (
        "[SYS]\nYardımsever ol.\n[/SYS]\n\n[Question]\nMerhaba\n[/Question]\n\n"
        "[Answer]\nSelam!\n[/Answer]\n\n[Question]\nNasılsın?\n[/Question]\n\n[Answer]\n"
    )
    monkeypatch.setattr(
        tokenizer, "chat_template", "{% for m in messages %}<{{ m['content'] }}>{% endfor %}", raising=False
    )
    assert chat_prompt(tokenizer, msgs) == "<Yardımsever ol.><Merhaba><Selam!><Nasılsın?>"  # its own wins


def test_penalty_on_canvas_ids_equals_the_penalty_on_the_presence_mask():
    from diffutron.sampling.proposals import apply_repetition_penalty_ids

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=gen, dtype=torch.float64)
    canvas = torch.randint(0, 50, (5, 12), generator=gen)
    valid = torch.ones_like(canvas)
    valid[:, 9:] = 0  # padding must not count
    mask_id = 4
    canvas[:, 3] = mask_id  # a hole must not count either
    dense = apply_repetition_penalty(logits, tokens_present(canvas, valid, mask_id, 50), 1.3)
    ids = torch.where(valid.bool(), canvas, mask_id)
    sparse = apply_repetition_penalty_ids(logits, ids, 1.3)
    keep = torch.ones(50, dtype=torch.bool)
    keep[mask_id] = False  # the mask's logit is forbidden afterwards: whatever happens to it is moot
    assert torch.equal(sparse[:, keep], dense[:, keep])
    assert not torch.equal(sparse, logits)


def test_each_row_of_a_seeded_batch_samples_as_alone_with_its_row_seed(micro_model, tokenizer):
    """Every row draws from its own generator: row b of a batch under seed s is that prompt alone under
    ``row_seed(s, b)`` (row 0: s itself), and a prompt repeated in a batch gives different samples."""
    from conftest import exact_enough

    from diffutron.sampling.engine import row_seed

    model = exact_enough(micro_model.eval())  # batched and alone compared token for token
    cfg = GenerationConfig(
        max_new_tokens=8, steps=4, block_size=4, temperature=2.0, stochastic_counts=True, seed=11
    )
    prompts = ["Merhaba", "Üniversiteyi bitirdikten sonra", "Merhaba"]
    together = generate(model, tokenizer, prompts, cfg)
    for b, p in enumerate(prompts):
        alone = generate(model, tokenizer, [p], dataclasses.replace(cfg, seed=row_seed(11, b)))
        assert alone.token_ids[0] == together.token_ids[b]
        assert torch.equal(alone.commit_step[0], together.commit_step[b, : alone.commit_step.shape[1]])
    assert together.token_ids[0] != together.token_ids[2]  # same prompt, own stream
    assert row_seed(11, 0) == 11 and len({row_seed(11, b) for b in range(100)}) == 100


def test_partial_views_never_show_half_a_character(tokenizer):
    """A byte-level BPE without merges splits "ş" (and every non-ASCII letter) into two byte tokens.
    While one of them is still masked, the committed one is shown as pending, never as U+FFFD."""
    from diffutron.sampling.prompts import view_runs
    from diffutron.text.tokenizer import train_tokenizer

    text = "Işık şehirde yaşıyor, öğrenciler İzmir'e gidiyor."
    bytes_only = train_tokenizer([text], vocab_size=261, show_progress=False)
    ids = bytes_only(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())  # one token per byte: every Turkish letter is split
    mask = bytes_only.mask_token_id
    assert bytes_only.decode(ids[1:2]) == "\ufffd"  # the first byte of "ş" in "Işık" alone
    s_at = len("Işık ".encode())  # "ş" of "şehirde": bytes s_at, s_at + 1
    for hole in ([s_at + 1], [s_at], list(range(s_at - 3, s_at + 1)), list(range(s_at + 1, s_at + 6))):
        canvas = [mask if i in hole else t for i, t in enumerate(ids)]
        shown = render_partial(bytes_only, canvas, mask, "_")
        runs = view_runs(bytes_only, canvas, mask)
        assert "\ufffd" not in shown
        pending = sum(r for r in runs if isinstance(r, int))
        assert pending == shown.count("_") and len(hole) <= pending <= len(hole) + 2
    one = [mask if i == s_at + 1 else t for i, t in enumerate(ids)]  # ş: first byte in, second masked
    assert render_partial(bytes_only, one, mask, "_") == text.replace("ş", "__", 2).replace("__", "ş", 1)
    full = view_runs(bytes_only, ids, mask)
    assert full == [text]  # nothing held back once the text is whole
