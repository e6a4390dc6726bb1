"""The step-level batch: a row alone gives what ``generate`` gives; a row in a batch what it gives alone.

What is guaranteed (docs/sampling.md, "What is deterministic"): a row draws the same random numbers
alone or in any batch, and makes the same choices wherever the model's scores are not within rounding
noise of a tie. A batched forward pass runs other kernels than a pass over one row, so in float32 the
same row's logits differ in their last bits (checked here within a stated tolerance); the token-for-token
comparisons therefore run the model in float64 (``serve_model``, see ``conftest.exact_enough``), where
that noise is about 1e-16 and no decision of these tests comes near it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffutron.sampling import GenerationConfig, generate, infill
from diffutron.sampling.batch import DecodeBatch

PROMPTS = ["Ankara", "İzmir'in havası bugün", "Öğretmenimiz bize şiir okudu ve", "Iğdır"]
FAST = dict(max_new_tokens=8, steps=8, block_size=4, stop_at_eos=False)
CONFIGS = {
    "greedy": GenerationConfig(**FAST, temperature=0.0),
    "sampled": GenerationConfig(**FAST, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=3),
    "threshold": GenerationConfig(**FAST, remasking="threshold", threshold=0.05, temperature=0.5, seed=4),
    "random": GenerationConfig(**FAST, remasking="random", temperature=1.0, top_k=20, seed=5),
    "stochastic": GenerationConfig(**FAST, stochastic_counts=True, remasking="margin", temperature=1.0),
    "guided": GenerationConfig(**FAST, guidance_scale=1.5, temperature=0.7, seed=6),
    "eos": GenerationConfig(max_new_tokens=8, steps=8, block_size=0, stop_at_eos=True, temperature=2.0),
}


# Max |logit difference| of a row batched and alone, relative to the row's largest |logit|: float32
# rounding (2^-24 ~ 6e-8 per operation) through two layers; measured up to 1.2e-7 on the micro model.
LOGIT_TOLERANCE = 1e-5


@pytest.mark.parametrize("model_name", ["float32_serve_model", "float32_reading_model"])
def test_batched_logits_agree_with_alone_within_rounding(request, tokenizer, model_name):
    """The float32 model, in the engine's own network call (``forward_candidates``): the logits of every
    answer position of a row padded into a batch of other prompts agree with that row alone within
    LOGIT_TOLERANCE. A row that attended to padding, or to another row, would be off by far more."""
    from diffutron.models.heads import MaskedLMParts
    from diffutron.sampling.engine import _prepare_generate, forward_candidates

    model = request.getfixturevalue(model_name)
    assert next(model.parameters()).dtype == torch.float32
    parts, mask_id = MaskedLMParts(model), tokenizer.mask_token_id
    fill = tokenizer.pad_token_id

    def answer_logits(canvas) -> torch.Tensor:
        at = canvas.editable.nonzero(as_tuple=True)
        with torch.no_grad():
            logits, _ = forward_candidates(parts, canvas.ids, canvas.attention, at)
        return logits.view(len(canvas.ids), -1, logits.shape[-1])

    together = _prepare_generate(model, tokenizer, PROMPTS, 8, mask_id, fill)
    assert not bool(together.attention.all())  # some rows are padded: a masked attention runs
    batched = answer_logits(together)
    for i, prompt in enumerate(PROMPTS):
        alone = answer_logits(_prepare_generate(model, tokenizer, [prompt], 8, mask_id, fill))[0]
        error = (batched[i] - alone).abs().max() / alone.abs().max()
        assert error <= LOGIT_TOLERANCE, (prompt, float(error))
    other_rows = (batched[0] - batched[1]).abs().max() / batched[0].abs().max()
    assert other_rows > 100 * LOGIT_TOLERANCE  # the tolerance is far below what tells rows apart


@pytest.fixture
def float32_reading_model(reading_model):
    return reading_model.float()


def run_alone(model, tokenizer, prompt, cfg, **kw):
    batch = DecodeBatch(model, tokenizer)
    row = batch.add(prompt, cfg, **kw)
    canvases = []
    while not row.done:
        if row in batch.step():
            canvases.append(row.canvas.clone())
    return row, canvases


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_row_alone_is_exactly_generate(serve_model, tokenizer, name):
    cfg = CONFIGS[name]
    for prompt in PROMPTS[:2]:
        want = generate(serve_model, tokenizer, [prompt], cfg)
        row, _ = run_alone(serve_model, tokenizer, prompt, cfg)
        got = row.output
        assert got.texts == want.texts and got.token_ids == want.token_ids
        assert torch.equal(got.commit_step, want.commit_step)
        assert got.steps == want.steps and got.row_passes == want.row_passes


def test_an_infill_row_alone_is_exactly_infill(serve_model, tokenizer):
    text = "Ankara Türkiye'nin <mask:3> şehridir ve <mask> yer alır."
    for cfg in (CONFIGS["greedy"], CONFIGS["sampled"]):
        want = infill(serve_model, tokenizer, [text], cfg)
        row, _ = run_alone(serve_model, tokenizer, text, cfg, infill=True)
        assert row.output.texts == want.texts and row.output.fills == want.fills
        assert torch.equal(row.output.commit_step, want.commit_step)


def test_rows_joining_and_leaving_a_running_batch_get_their_alone_text(serve_model, tokenizer):
    """Mixed prompts, lengths and settings; rows join at different steps; one leaves early.
    Every row that finishes has its alone text: its draws come from its own generator."""
    names = ["sampled", "greedy", "threshold", "random", "guided", "stochastic"]
    jobs = [
        (PROMPTS[i % len(PROMPTS)], dataclasses.replace(CONFIGS[n], seed=10 + i)) for i, n in enumerate(names)
    ]
    alone = [run_alone(serve_model, tokenizer, p, c)[0].output.texts for p, c in jobs]
    batch = DecodeBatch(serve_model, tokenizer)
    rows, waiting, step = {}, list(enumerate(jobs)), 0
    quitter = None
    while waiting or batch.rows:
        if waiting and step % 2 == 0:  # a new request joins every other step
            i, (p, c) = waiting.pop(0)
            rows[i] = batch.add(p, c, tag=i)
            if i == 1:
                quitter = rows[i]
        if step == 3 and quitter in batch.rows:  # its client went away
            batch.remove(quitter)
        for row in batch.step():
            if row.done:
                batch.remove(row)
        step += 1
        assert step < 500
    assert max(len(alone[i][0]) for i in range(len(jobs))) > 0
    for i, row in rows.items():
        if row is quitter:
            assert not row.done
            continue
        assert row.output.texts == alone[i], f"row {i} ({names[i]}) changed when batched"
    assert batch.forward_passes < sum(r.passes for r in rows.values())  # passes were shared


def test_stop_strings_end_a_row_with_finish_reason_stop(serve_model, tokenizer):
    cfg = CONFIGS["greedy"]
    full = run_alone(serve_model, tokenizer, "Ankara", cfg)[0].output.texts[0]
    assert not run_alone(serve_model, tokenizer, "Ankara", cfg)[0].stopped
    stop = full.strip()[:2]
    row, _ = run_alone(serve_model, tokenizer, "Ankara", dataclasses.replace(cfg, stop=(stop,)))
    assert row.stopped and stop not in row.output.texts[0]


def test_partial_views_show_masks_until_the_answer_is_full(serve_model, tokenizer):
    batch = DecodeBatch(serve_model, tokenizer)
    row = batch.add("Ankara", CONFIGS["greedy"])
    seen = []
    while not row.done:
        if row in batch.step():
            seen.append(row.segments(tokenizer))
    assert any(isinstance(s, int) for s in seen[0])  # masks at the first step
    assert sum(s for s in seen[0] if isinstance(s, int)) == 8 - int(row.output.commit_step.eq(0).sum())
    assert not any(isinstance(s, int) for s in seen[-1])
    assert "".join(seen[-1]) == row.output.texts[0]


def test_bad_input_is_a_value_error_and_leaves_the_batch_untouched(serve_model, tokenizer):
    batch = DecodeBatch(serve_model, tokenizer)
    with pytest.raises(ValueError, match="context"):
        batch.add("Ankara " * 300, CONFIGS["greedy"])
    with pytest.raises(ValueError, match="hole"):
        batch.add("Ankara", CONFIGS["greedy"], infill=True)
    with pytest.raises(ValueError, match="steps"):
        batch.add("Ankara", dataclasses.replace(CONFIGS["greedy"], steps=0))
    assert batch.rows == []


def test_rows_with_mixed_settings_added_together_share_every_pass_and_get_their_alone_output(
    serve_model, tokenizer
):
    """One vectorised step for rows of every setting at once (grouped by settings for the proposals):
    each row's output, commit steps and passes are what it gets alone, and each step is one pass."""
    names = sorted(CONFIGS)
    jobs = [(PROMPTS[i % len(PROMPTS)], CONFIGS[n], {}) for i, n in enumerate(names)]
    text = "Ankara Türkiye'nin <mask:3> şehridir ve <mask> yer alır."
    jobs += [(text, CONFIGS["sampled"], {"infill": True}), (text, CONFIGS["greedy"], {"infill": True})]
    alone = [run_alone(serve_model, tokenizer, p, c, **kw)[0] for p, c, kw in jobs]
    batch = DecodeBatch(serve_model, tokenizer)
    rows = [batch.add(p, c, **kw) for p, c, kw in jobs]
    steps = 0
    while not all(r.done for r in rows):
        batch.step()
        steps += 1
    assert batch.forward_passes == steps == max(a.steps for a in alone)
    for name, a, r in zip(names + ["infill sampled", "infill greedy"], alone, rows, strict=True):
        assert r.output.texts == a.output.texts and r.output.fills == a.output.fills, name
        assert torch.equal(r.output.commit_step, a.output.commit_step), name
        assert (r.passes, r.steps, r.stopped) == (a.passes, a.steps, a.stopped), name


def test_a_row_leaving_mid_step_sequence_frees_its_place(serve_model, tokenizer):
    batch = DecodeBatch(serve_model, tokenizer)
    long_row = batch.add(PROMPTS[2], CONFIGS["greedy"])
    short = batch.add(PROMPTS[0], CONFIGS["sampled"])
    batch.step()
    batch.remove(long_row)
    assert batch.rows == [short] and len(batch.state) == 1
    assert batch.state.canvas.shape[1] == short.length  # the canvas shrank to the rows left
    while not short.done:
        batch.step()
    assert (
        short.output.texts
        == run_alone(serve_model, tokenizer, PROMPTS[0], CONFIGS["sampled"])[0].output.texts
    )
    assert not long_row.done and long_row.canvas.shape == (long_row.length,)  # its last state stays readable
