"""The sampling engine on a fixed-logits stand-in: exact commit orders, counts, stopping, infilling.

The stand-in returns a chosen logit table per absolute position (whatever the input), so the order in
which a rule commits positions is known in advance. Its model_type is unknown to MaskedLMParts, which
then falls back to full logits — the engine must work with any masked LM.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffutron.diffusion import get_schedule
from diffutron.sampling import GenerationConfig, generate, infill, stream
from diffutron.sampling.commit import reveal_counts


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread, and on a busy machine thread hand-offs cost
    more than the work: one thread keeps these tests fast and their timing steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BASE = -50.0  # logit of every token not named: negligible probability


class FixedLogits(nn.Module):
    """logits[b, i] = table[i] for every row b; ``uncond`` (optional) is used when position 1 is masked."""

    def __init__(self, table: torch.Tensor, mask_id: int, uncond: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("table", table)
        self.uncond = uncond
        self.mask_id = mask_id
        self.calls = 0
        self.config = SimpleNamespace(
            vocab_size=table.shape[1], max_position_embeddings=table.shape[0], model_type="fixed-logits"
        )

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        b, w = input_ids.shape
        logits = self.table[:w].expand(b, w, -1).clone()
        if self.uncond is not None:
            masked = input_ids[:, 1] == self.mask_id
            logits[masked] = self.uncond[:w]
        return SimpleNamespace(logits=logits)


def make_table(tokenizer, width: int, rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """rows: position -> {token id: probability}; the probabilities become log-probabilities."""
    table = torch.full((width, len(tokenizer)), BASE)
    for pos, probs in rows.items():
        for tok, p in probs.items():
            table[pos, tok] = math.log(p)
    return table


def confident(tok: int, c: float) -> dict[int, float]:
    """Token ``tok`` with probability c, the rest spread over other tokens, each less likely than c."""
    m = math.floor((1 - c) / c) + 1
    return {tok: c, **{500 + tok % 50 + j: (1 - c) / m for j in range(m)}}


def prompt(tokenizer, n: int = 2) -> list[int]:
    return [tokenizer.bos_token_id, *range(50, 50 + n - 1)]  # n tokens including <bos>


def answer_steps(out, n_new: int) -> list[int]:
    n0 = out.prompt_lengths[0]
    return out.commit_step[0, n0 : n0 + n_new].tolist()


def run(tokenizer, rows, n_new, width=None, prompt_len=2, **cfg):
    model = FixedLogits(make_table(tokenizer, width or prompt_len + n_new, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=n_new, **{"steps": n_new, "block_size": 0, **cfg})
    return generate(model, tokenizer, [prompt(tokenizer, prompt_len)], cfg), model


# Four answer positions whose three scores disagree (probabilities of the listed tokens):
#   pos 2: [.5, .5]        conf .5   margin 0   entropy .693
#   pos 3: [.6, .1 x 4]    conf .6   margin .5  entropy 1.227
#   pos 4: [.4, .2 x 3]    conf .4   margin .2  entropy 1.332
#   pos 5: [.55, .45]      conf .55  margin .1  entropy .688
SCORED = {
    2: {100: 0.5, 101: 0.5},
    3: {110: 0.6, 111: 0.1, 112: 0.1, 113: 0.1, 114: 0.1},
    4: {120: 0.4, 121: 0.2, 122: 0.2, 123: 0.2},
    5: {130: 0.55, 131: 0.45},
}


@pytest.mark.parametrize(
    "rule, order",
    [
        ("low_confidence", [3, 5, 2, 4]),  # highest probability of the proposal first
        ("margin", [3, 4, 5, 2]),  # largest top-1 minus top-2 first
        ("entropy", [5, 2, 3, 4]),  # lowest entropy first
    ],
)
def test_each_commit_rule_commits_positions_in_its_order(tokenizer, rule, order):
    out, model = run(tokenizer, SCORED, n_new=4, remasking=rule)
    steps = answer_steps(out, 4)
    assert [2 + steps.index(i) for i in range(4)] == order
    assert out.forward_passes == model.calls == 4
    assert out.canvas[0, 3].item() == 110 and out.canvas[0, 4].item() == 120  # greedy proposals


def test_random_remasking_is_a_seeded_permutation_with_scheduled_counts(tokenizer):
    rows = {p: {200 + p: 0.9} for p in range(2, 14)}  # confidence rises to the right
    orders = set()
    for seed in (0, 1, 2):
        out, _ = run(tokenizer, rows, n_new=12, steps=6, remasking="random", seed=seed)
        steps = answer_steps(out, 12)
        assert sorted(steps) == [s for s in range(6) for _ in range(2)]  # two per step, every step
        again, _ = run(tokenizer, rows, n_new=12, steps=6, remasking="random", seed=seed)
        assert answer_steps(again, 12) == steps
        orders.add(tuple(steps))
    assert len(orders) == 3  # the positions depend on the seed, not on the model


def test_per_step_counts_follow_the_schedule(tokenizer):
    rows = {p: {200 + p: 0.9} for p in range(2, 18)}
    cosine = get_schedule("cosine")
    model = FixedLogits(make_table(tokenizer, 18, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=16, steps=5, block_size=0)
    out = generate(model, tokenizer, [prompt(tokenizer)], cfg, schedule=cosine)
    per_step = torch.bincount(torch.tensor(answer_steps(out, 16)), minlength=5).tolist()
    assert per_step == reveal_counts(16, 5, cosine).tolist()
    assert per_step != [16 // 5 + (i < 1) for i in range(5)]  # not the linear split


def test_stochastic_counts_are_binomial_draws_that_empty_the_block(tokenizer):
    rows = {p: {200 + p: 0.9} for p in range(2, 34)}
    seen = set()
    for seed in range(4):
        out, _ = run(tokenizer, rows, n_new=32, steps=8, stochastic_counts=True, seed=seed)
        steps = answer_steps(out, 32)
        assert min(steps) >= 0 and max(steps) <= 7  # everything committed within the 8 steps
        counts = tuple(torch.bincount(torch.tensor(steps), minlength=8).tolist())
        seen.add(counts)
        again, _ = run(tokenizer, rows, n_new=32, steps=8, stochastic_counts=True, seed=seed)
        assert answer_steps(again, 32) == steps
    assert (4,) * 8 not in seen or len(seen) > 1  # not the deterministic split every time
    assert len(seen) > 1


def test_threshold_commits_every_confident_position_and_at_least_one_per_pass(tokenizer):
    confs = [0.95, 0.3, 0.92, 0.5, 0.99, 0.2]
    rows = {2 + i: confident(300 + i, c) for i, c in enumerate(confs)}
    out, model = run(tokenizer, rows, n_new=6, remasking="threshold", threshold=0.9)
    assert answer_steps(out, 6) == [0, 2, 0, 1, 0, 3]  # 3 at once, then one per pass (the best)
    assert out.forward_passes == model.calls == 4
    low, _ = run(tokenizer, rows, n_new=6, remasking="threshold", threshold=0.25)
    assert low.forward_passes == 2  # all but the 0.2 position pass tau = 0.25


def test_blocks_are_decoded_left_to_right(tokenizer):
    confs = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # the last block is the most confident
    rows = {2 + i: confident(300 + i, c) for i, c in enumerate(confs)}
    out, _ = run(tokenizer, rows, n_new=6, steps=6, block_size=2)
    assert answer_steps(out, 6) == [1, 0, 3, 2, 5, 4]  # within a block: most confident first
    thr, _ = run(tokenizer, rows, n_new=6, block_size=2, remasking="threshold", threshold=0.55)
    assert answer_steps(thr, 6) == [1, 0, 3, 2, 4, 4]  # only what passes tau, at least one per pass


def test_a_step_with_nothing_to_commit_makes_no_network_call(tokenizer):
    rows = dict(SCORED)
    short, _ = run(tokenizer, rows, n_new=4, steps=4)
    long, model = run(tokenizer, rows, n_new=4, steps=16)
    assert model.calls == long.forward_passes == 4 and long.steps > 4
    assert long.token_ids == short.token_ids
    order = lambda out: sorted(range(4), key=lambda i: answer_steps(out, 4)[i])  # noqa: E731
    assert order(long) == order(short)


def test_end_token_stops_the_row_once_everything_before_it_is_filled(tokenizer):
    """The end token is the most confident proposal, so it is committed first, at step 0, while both
    positions before it are still masked: the row must go on until they are filled (steps 1 and 2),
    then stop at once, its positions after the end token filled with end tokens, never decoded."""
    eos = tokenizer.eos_token_id
    # real confidences (``confident`` spreads the rest): eos .99 > .7 (pos 3) > .6 (pos 2) > .5 (after)
    rows = {2: confident(60, 0.6), 3: confident(61, 0.7), 4: confident(eos, 0.99)}
    rows |= {p: confident(60 + p, 0.5) for p in (5, 6, 7)}
    model = FixedLogits(make_table(tokenizer, 8, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=6, steps=6, block_size=0)
    events = list(stream(model, tokenizer, [prompt(tokenizer)], cfg))
    first, mask = events[0], tokenizer.mask_token_id
    assert first.canvas[0, 2:8].tolist() == [mask, mask, eos, mask, mask, mask]  # eos with masks before it
    assert not bool(first.finished[0])  # ... does not end the row
    assert [bool(e.finished[0]) for e in events[:3]] == [False, False, True]  # ends once 2 and 3 are filled
    out = events[-1].output
    assert answer_steps(out, 6)[:3] == [2, 1, 0]  # eos first, then the holes before it
    assert model.calls == out.forward_passes == 3  # positions after the end token never decoded
    assert out.token_ids == [[60, 61]]
    assert out.canvas[0, 5:8].tolist() == [eos] * 3
    off = generate(
        model, tokenizer, [prompt(tokenizer)], GenerationConfig(**{**vars(cfg), "stop_at_eos": False})
    )
    assert off.forward_passes == 6 and off.canvas[0, 5:8].tolist() == [65, 66, 67]


def test_stop_strings_end_the_row_and_are_cut_from_the_text(tokenizer):
    ids = tokenizer(" evet[/Answer] hayır uzun bir metin", add_special_tokens=False)["input_ids"]
    rows = {2 + i: {t: 0.9 - 0.01 * i} for i, t in enumerate(ids)}  # decodes left to right
    out, model = run(tokenizer, rows, n_new=len(ids), stop=("[/Answer]",))
    assert out.texts == [" evet"]
    assert model.calls < len(ids)
    full, _ = run(tokenizer, rows, n_new=len(ids))
    assert full.texts[0].startswith(" evet[/Answer] hayır")


def test_mask_and_suppressed_tokens_are_never_proposed(tokenizer):
    mask = tokenizer.mask_token_id
    rows = {2: {mask: 0.9, 70: 0.1}, 3: {71: 0.8, 72: 0.2}}
    out, _ = run(tokenizer, rows, n_new=2, suppress_tokens=(71,))
    assert out.token_ids == [[70, 72]]


def test_repetition_penalty_through_the_engine_matches_its_definition(tokenizer):
    # prompt = [bos, 50]. pos 2: 50 (in the prompt) beats 61 by 12.0 to 11.8; 12 / 1.2 = 10 < 11.8.
    # pos 3: 50 at -1.0 vs 62 at -1.1: -1.0 * 1.2 = -1.2 < -1.1.  pos 4: 61, committed at pos 2,
    # is now in the canvas: 2.0 / 1.2 < 1.9 of 63. pos 2 is the most confident, so it goes first.
    table = torch.full((5, len(tokenizer)), BASE)
    table[2, 50], table[2, 61] = 12.0, 11.8  # 12 / 1.2 = 10 < 11.8; far above BASE: the most confident
    table[3, 50], table[3, 62] = -1.0, -1.1
    table[4, 61], table[4, 63] = 2.0, 1.9
    model = FixedLogits(table, tokenizer.mask_token_id)
    plain = generate(model, tokenizer, [prompt(tokenizer)], GenerationConfig(max_new_tokens=3, steps=3))
    assert plain.token_ids == [[50, 50, 61]]
    cfg = GenerationConfig(max_new_tokens=3, steps=3, repetition_penalty=1.2)
    out = generate(model, tokenizer, [prompt(tokenizer)], cfg)
    assert answer_steps(out, 3)[0] == 0
    assert out.token_ids == [[61, 62, 63]]


def test_temperature_samples_from_the_softmax_and_top_k_p_cut_it(tokenizer):
    # Random remasking: which positions commit must not depend on what was drawn (low-confidence
    # remasking would keep the likelier draws and bias the share upwards).
    n = 200
    rows = {2 + i: {80: 0.7, 81: 0.3} for i in range(n)}
    run = functools.partial(globals()["run"], remasking="random")
    hot, _ = run(tokenizer, rows, n_new=n, steps=10, temperature=1.0, seed=0)
    share = hot.token_ids[0].count(80) / n
    assert abs(share - 0.7) < 0.1  # 3 sigma; Gumbel-max draws from softmax(logits / T)
    cold, _ = run(tokenizer, rows, n_new=n, steps=10, temperature=0.1, seed=0)
    assert cold.token_ids[0].count(80) >= n - 2  # (0.3 / 0.7) ** 10: almost never 81
    other, _ = run(tokenizer, rows, n_new=n, steps=10, temperature=1.0, seed=1)
    assert other.token_ids != hot.token_ids
    for cut in ({"top_k": 1}, {"top_p": 0.5}):
        out, _ = run(tokenizer, rows, n_new=n, steps=10, temperature=1.0, seed=0, **cut)
        assert set(out.token_ids[0]) == {80}


def test_classifier_free_guidance_extrapolates_away_from_the_unconditional(tokenizer):
    width = 4
    cond = torch.full((width, len(tokenizer)), BASE)
    cond[3, 90], cond[3, 91] = 2.0, 1.9
    uncond = cond.clone()
    uncond[3, 91] = 1.0
    model = FixedLogits(cond, tokenizer.mask_token_id, uncond=uncond)
    ids = [prompt(tokenizer, 3)]
    assert generate(model, tokenizer, ids, GenerationConfig(max_new_tokens=1, steps=1)).token_ids == [[90]]
    guided = generate(model, tokenizer, ids, GenerationConfig(max_new_tokens=1, steps=1, guidance_scale=1.0))
    assert guided.token_ids == [[91]]  # 1.0 + 2 (1.9 - 1.0) = 2.8 > 2.0
    assert model.calls == 2  # one call each: the guided call batches both passes


def test_infill_changes_only_the_holes_and_never_writes_special_tokens(tokenizer):
    text = "Ankara Türkiye'nin <mask:2> şehridir. [...]"
    eos, mask = tokenizer.eos_token_id, tokenizer.mask_token_id
    from diffutron.sampling.prompts import encode_with_holes

    ids, holes = encode_with_holes(tokenizer, text, mask, span=1)
    (a, _), (c, _) = holes
    table = torch.full((len(ids), len(tokenizer)), 5.0)  # everything equally likely ...
    table[a, eos], table[a, 150] = 9.0, 8.0  # ... except: eos would win the first hole
    table[a + 1, 151] = 8.0
    table[c, 152] = 8.0
    model = FixedLogits(table, mask)
    out = infill(model, tokenizer, [text], GenerationConfig(steps=8), span=1)
    got = out.canvas[0, : len(ids)].tolist()
    given = [i for i in range(len(ids)) if ids[i] != mask]
    assert [got[i] for i in given] == [ids[i] for i in given]
    assert [got[a], got[a + 1], got[c]] == [150, 151, 152]
    assert (out.commit_step[0, given] == -1).all()
    assert out.fills == [[tokenizer.decode([150, 151]), tokenizer.decode([152])]]
    assert out.texts[0].startswith("Ankara Türkiye'nin") and " şehridir." in out.texts[0]
    assert model.calls == 3  # 8 steps, 3 hole tokens: steps with nothing to commit cost nothing


def test_stream_yields_growing_canvases_and_ends_with_the_output(tokenizer):
    rows = {p: {200 + p: 0.9 - 0.01 * p} for p in range(2, 8)}
    model = FixedLogits(make_table(tokenizer, 8, rows), tokenizer.mask_token_id)
    cfg = GenerationConfig(max_new_tokens=6, steps=3, block_size=0)
    events = list(stream(model, tokenizer, [prompt(tokenizer)], cfg))
    assert [e.done for e in events] == [False, False, False, True]
    assert [int(e.committed.sum()) for e in events[:3]] == [2, 2, 2]
    assert [e.partial_texts(tokenizer)[0].count("░") for e in events] == [4, 2, 0, 0]
    assert events[-1].output.token_ids == generate(model, tokenizer, [prompt(tokenizer)], cfg).token_ids


def test_drawing_only_where_a_commit_can_happen_equals_drawing_everywhere(monkeypatch):
    """The engine draws proposals lazily; with a draw that is a fixed function of each row, the result
    must be the eager one (draw every candidate, score all, pick) for every rule."""
    import functools as ft

    import diffutron.sampling.engine as engine
    from diffutron.sampling.commit import SCORERS, above_threshold, top_k_per_row

    def fixed_draw(scaled, temperature, generator):  # Gumbel-max with noise hashed from the values
        col = torch.arange(scaled.shape[-1], dtype=torch.float64)
        u = torch.frac(
            torch.sin(12.9898 * col + 78.233 * torch.round(scaled.nan_to_num(0, 0, -1e9) * 1e3)) * 43758.5453
        )
        return (scaled - torch.log(-torch.log(u.abs().clamp(1e-12, 1 - 1e-12)))).argmax(-1)

    monkeypatch.setattr(engine, "draw", fixed_draw)
    gen = torch.Generator().manual_seed(0)
    batch, width, vocab = 6, 10, 40
    for trial in range(30):
        candidates = torch.rand(batch, width, generator=gen) < 0.6
        candidates[:, 0] = True
        rows, cols = candidates.nonzero(as_tuple=True)
        logits = torch.randn(len(rows), vocab, generator=gen, dtype=torch.float64) * (1 + trial % 4)
        k = torch.randint(1, 4, (batch,), generator=gen).clamp(max=candidates.sum(1))
        for rule in ("low_confidence", "threshold", "margin"):
            score_fn = SCORERS["low_confidence" if rule == "threshold" else rule]
            if rule == "threshold":
                pick = ft.partial(above_threshold, candidates=candidates, tau=0.3)
            else:
                pick = ft.partial(top_k_per_row, candidates=candidates, k=k)
            cfg = GenerationConfig(temperature=1.0)
            commit, tokens = engine._choose(
                lambda idx, x=logits: (x[idx], x[idx]),
                len(rows),
                vocab,
                rows,
                cols,
                (batch, width),
                pick,
                score_fn,
                cfg,
                None,
            )
            eager_tokens = fixed_draw(logits, 1.0, None)
            grid = torch.full((batch, width), float("-inf"), dtype=torch.float64)
            grid[rows, cols] = score_fn(logits, eager_tokens, None) if score_fn.uses_proposal else 0.0
            if not score_fn.uses_proposal:
                grid[rows, cols] = score_fn(logits, None, None)
            eager = pick(grid)
            assert torch.equal(commit, eager), (trial, rule)
            at = commit[rows, cols]
            assert torch.equal(tokens[at], eager_tokens[at]), (trial, rule)


def test_confidence_is_scored_before_top_k_top_p_filtering(tokenizer):
    """Filtering shapes the draw only (LLaDA, Fast-dLLM): a top token of p = 0.85 keeps confidence
    0.85 under top_p = 0.8, so threshold decoding at tau = 0.9 does not commit it in the first pass."""
    rows = {2: confident(300, 0.85), 3: confident(301, 0.95), 4: confident(302, 0.86)}
    out, _ = run(tokenizer, rows, n_new=3, remasking="threshold", threshold=0.9, top_p=0.8)
    assert answer_steps(out, 3) == [2, 0, 1]  # 0.95 passes tau; then one per pass, best first
    # top_k = 1 leaves one id per position; low-confidence order must still follow the model
    out, _ = run(tokenizer, SCORED, n_new=4, remasking="low_confidence", top_k=1)
    steps = answer_steps(out, 4)
    assert [2 + steps.index(i) for i in range(4)] == [3, 5, 2, 4]


def test_prepare_returns_unfiltered_logits_for_scoring_and_filtered_ones_for_drawing():
    from diffutron.sampling.proposals import prepare

    probs = torch.tensor([[0.85, 0.10, 0.05, 0.0]], dtype=torch.float64)
    logits = probs.clamp(min=1e-30).log()
    forbidden = torch.tensor([False, False, False, True])
    scored, scaled = prepare(logits, forbidden, temperature=1.0, top_k=0, top_p=0.8)
    assert scored.softmax(-1)[0, 0].item() == pytest.approx(0.85)
    assert scored[0, 3].item() == float("-inf")  # forbidden ids stay out of the scores
    assert torch.isinf(scaled[0, 1:]).all() and scaled[0, 0].isfinite()  # the draw sees the cut


def test_steps_not_divisible_by_blocks_are_all_taken(tokenizer):
    """5 steps over 3 blocks: 2 + 2 + 1 (the remainder goes to the first blocks), not 1 + 1 + 1."""
    rows = {p: confident(300 + p, 0.5 + 0.05 * p) for p in range(2, 8)}
    out, model = run(tokenizer, rows, n_new=6, steps=5, block_size=2)
    assert out.steps == 5 and model.calls == 5
    assert sorted(set(answer_steps(out, 6))) == [0, 1, 2, 3, 4]
    with pytest.warns(UserWarning, match="each block gets one step"):
        few, _ = run(tokenizer, rows, n_new=6, steps=2, block_size=2)
    assert few.steps == 3


@pytest.mark.parametrize("cfg", [dict(), dict(remasking="margin"), dict(top_k=3, repetition_penalty=1.3)])
def test_proposals_in_chunks_give_the_one_chunk_result_and_bound_the_float64_copies(
    tokenizer, monkeypatch, cfg
):
    import diffutron.sampling.engine as engine

    rows = {p: {200 + p: 0.3 + 0.04 * p, 260 + p: 0.2} for p in range(2, 14)}
    whole, _ = run(tokenizer, rows, n_new=12, steps=4, **cfg)
    vocab = len(tokenizer)
    seen_rows = []
    real_prepare = engine.prepare

    def spy(logits, *args, **kwargs):
        seen_rows.append(logits.shape[0])
        return real_prepare(logits, *args, **kwargs)

    monkeypatch.setattr(engine, "MAX_PROPOSAL_ELEMENTS", 3 * vocab)
    monkeypatch.setattr(engine, "prepare", spy)
    chunked, _ = run(tokenizer, rows, n_new=12, steps=4, **cfg)
    assert chunked.token_ids == whole.token_ids and torch.equal(chunked.commit_step, whole.commit_step)
    assert max(seen_rows) == 3  # never more than 3 rows x V float64 logits at once


# -- the adaptive rules of issue 26: selection on constructed tables, then through generate -------------


def _row(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_factor_rule_commits_the_confident_prefix_while_n_plus_one_times_error_is_below_f():
    from diffutron.sampling.commit import factor_rule

    scores = _row([0.99, 0.9, 0.7, 0.95, 0.999])
    cand = torch.tensor([[True, True, True, True, False]])  # the 0.999 is no candidate
    # sorted .99, .95, .9, .7: (n+1)(1-p_n) = .02, .15, .4, 1.5
    assert factor_rule(scores, cand, 1.0).tolist() == [[True, True, False, True, False]]
    assert factor_rule(scores, cand, 0.3).tolist() == [[True, False, False, True, False]]  # .4 >= .3
    # a prefix: once a position fails, no less confident one is taken (1.2 fails at n = 2)
    assert factor_rule(_row([0.6, 0.99]), torch.ones(1, 2, dtype=torch.bool), 1.0).tolist() == [[False, True]]
    # (n + 1), not n: 2 x .4 = .8 passes, 3 x .45 = 1.35 does not (n x .45 = .9 would)
    assert factor_rule(_row([0.6, 0.55]), torch.ones(1, 2, dtype=torch.bool), 1.0).tolist() == [[True, False]]
    # nothing passes (2 x 0.7 = 1.4): the best one all the same
    assert factor_rule(_row([0.2, 0.3]), torch.ones(1, 2, dtype=torch.bool), 1.0).tolist() == [[False, True]]


def test_entropy_budget_rule_takes_lowest_entropy_first_while_the_sum_fits():
    from diffutron.sampling.commit import entropy_budget_rule

    scores = -_row([0.1, 0.3, 0.05, 0.7])  # the entropy scorer gives minus entropies
    cand = torch.ones(1, 4, dtype=torch.bool)
    assert entropy_budget_rule(scores, cand, 0.4).tolist() == [[True, False, True, False]]  # .05 + .1
    assert entropy_budget_rule(scores, cand, 0.45).tolist() == [[True, True, True, False]]  # + .3
    assert entropy_budget_rule(scores, cand, 0.0).tolist() == [[False, False, True, False]]  # the best


def test_calibration_divides_the_logits_before_scoring():
    from diffutron.sampling import SCORERS
    from diffutron.sampling.commit import calibrated

    logits = torch.tensor([[math.log(0.9), math.log(0.1)]], dtype=torch.float64)
    tok = torch.tensor([0])
    hot = calibrated(SCORERS["low_confidence"], 2.0)(logits, tok, None)
    expected = 0.9**0.5 / (0.9**0.5 + 0.1**0.5)  # 0.75: a tempered model is less sure
    assert hot.item() == pytest.approx(expected, abs=1e-12)
    assert calibrated(SCORERS["low_confidence"], 1.0)(logits, tok, None).item() == pytest.approx(0.9)
    with pytest.raises(ValueError, match="confidence_temperature"):
        GenerationConfig(confidence_temperature=0.0).validate()


def test_factor_rule_through_generate_commits_several_per_pass(tokenizer):
    confs = [0.95, 0.3, 0.92, 0.5, 0.99, 0.2]
    rows = {2 + i: confident(300 + i, c) for i, c in enumerate(confs)}
    # f = 3, pass 1: .99 .95 .92 .5 -> .02 .15 .32 2.5 (< 3), then .3 -> 4.2 stops; pass 2: .3 .2 -> 1.4 2.4
    out, model = run(tokenizer, rows, n_new=6, remasking="factor", factor=3.0)
    assert answer_steps(out, 6) == [0, 1, 0, 0, 0, 1]
    assert out.forward_passes == model.calls == 2
    # f = 1: .5 gives 2 x .5 = 1, not < 1: one per pass after the three sure ones
    one, _ = run(tokenizer, rows, n_new=6, remasking="factor", factor=1.0)
    assert answer_steps(one, 6) == [0, 2, 0, 1, 0, 3]


def test_entropy_budget_and_margin_threshold_through_generate(tokenizer):
    # SCORED entropies .693 1.227 1.332 .688; budget 1.5: .688 + .693 first, then 1.227, then 1.332
    out, _ = run(tokenizer, dict(SCORED), n_new=4, remasking="entropy_budget", entropy_budget=1.5)
    assert answer_steps(out, 4) == [0, 1, 2, 0]
    # margins 0 .5 .2 .1: >= .15 at once, then the best remaining one per pass
    mar, _ = run(tokenizer, dict(SCORED), n_new=4, remasking="margin_threshold", threshold=0.15)
    assert answer_steps(mar, 4) == [2, 0, 0, 1]


def test_factor_rule_with_sampling_draws_and_finishes(tokenizer):
    confs = [0.95, 0.3, 0.92, 0.5, 0.99, 0.2]
    rows = {2 + i: confident(300 + i, c) for i, c in enumerate(confs)}
    out, _ = run(tokenizer, rows, n_new=6, remasking="factor", factor=3.0, temperature=1.0, seed=3)
    steps = answer_steps(out, 6)
    assert min(steps) == 0 and all(s >= 0 for s in steps)  # every position written, several at once
    assert steps.count(0) >= 2


def test_remasking_revises_unsure_tokens_within_its_budget(tokenizer):
    # A (.3) and B (.2), tau .9: one per pass. With remask_threshold .4, each pass re-masks the earlier
    # token (still below .4) until the budget is spent: A@0, B@1 (A out), A@2 (B out), B@3.
    rows = {2: confident(300, 0.3), 3: confident(301, 0.2)}
    cfg = {"remasking": "threshold", "threshold": 0.9}
    plain, _ = run(tokenizer, rows, n_new=2, **cfg)
    assert answer_steps(plain, 2) == [0, 1] and plain.forward_passes == 2
    for budget, steps in ((2, [2, 3]), (1, [2, 1])):
        out, model = run(tokenizer, rows, n_new=2, remask_threshold=0.4, remask_budget=budget, **cfg)
        assert answer_steps(out, 2) == steps
        assert out.forward_passes == model.calls == 2 + budget  # each re-mask cost one pass
        assert out.token_ids[0][:2] == [300, 301]
    sure, _ = run(tokenizer, rows, n_new=2, remask_threshold=0.1, remask_budget=4, **cfg)
    assert sure.forward_passes == 2  # nothing fell below .1: nothing re-masked
    with pytest.raises(ValueError, match="remask_threshold"):
        GenerationConfig(remask_threshold=1.0).validate()
