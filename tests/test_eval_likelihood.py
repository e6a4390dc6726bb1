"""The Monte-Carlo ELBO of a continuation: exactness, unbiasedness, batching, token alignment."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import ModernBertForMaskedLM, PreTrainedTokenizerFast

from diffutron.evaluation.likelihood import (
    ContinuationScorer,
    EncodedPair,
    LikelihoodConfig,
    encode_pair,
    plan_rows,
    reference_loglikelihood,
    special_affixes,
)
from diffutron.models.presets import preset_config

MASK = 4
TOY_VOCAB = 12  # 5 special ids (pad, eos, bos, unk, mask) + 7 "words"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Micro models: one thread is faster, and far faster on a busy machine (no OpenMP spin-waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy_model():
    """A micro ModernBERT over a 12-token vocabulary: the exact ELBO is a short enumeration."""
    torch.manual_seed(1)
    cfg = preset_config(
        "tiny",
        None,
        vocab_size=TOY_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = ModernBertForMaskedLM(cfg).eval()
    with torch.no_grad():  # sharper predictions than the init, so the CE varies a lot between subsets
        model.decoder.weight.mul_(8.0)
    return model


def exact_elbo(model, pair: EncodedPair) -> float:
    """ELBO = mean over m in 1..L of (L/m) * mean over subsets S of size m of -sum CE(S masked);
    brute force with the full output head, no code shared with the estimator."""
    ids = torch.tensor([pair.ids])
    start, n = pair.answer_start, len(pair.answer)
    per_m = []
    for m in range(1, n + 1):
        values = []
        for subset in itertools.combinations(range(n), m):
            pos = [start + i for i in subset]
            noisy = ids.clone()
            noisy[0, pos] = MASK
            with torch.no_grad():
                logits = model(input_ids=noisy).logits[0].float()
            logits[:, MASK] = -math.inf
            values.append(-float(F.cross_entropy(logits[pos], ids[0, pos], reduction="sum")))
        per_m.append(n / m * sum(values) / len(values))
    return sum(per_m) / n


PAIR = EncodedPair(context=(5, 6, 7, 8), answer=(9, 5, 11, 10, 6), prefix=(2,), suffix=(1,))


def _scorer(model, **kw):
    return ContinuationScorer(model, None, mask_id=MASK, pad_id=0, config=LikelihoodConfig(**kw))


def test_enumeration_gives_the_exact_elbo_of_a_short_answer(toy_model):
    exact = exact_elbo(toy_model, PAIR)
    out = _scorer(toy_model, samples=32).score_encoded([PAIR])  # 2^5 - 1 = 31 subsets <= 32 samples
    assert out.exact == [True] and out.rows == 31 and out.stderr == [0.0]
    assert out.loglikelihoods[0] == pytest.approx(exact, abs=1e-4)


def test_monte_carlo_estimate_is_unbiased_and_converges_to_the_exact_elbo(toy_model):
    exact = exact_elbo(toy_model, PAIR)
    errors = {}
    for samples in (4, 64):
        estimates = []
        for seed in range(40):
            scorer = _scorer(toy_model, samples=samples, seed=seed, enumerate_small=False, batch_size=256)
            estimates.append(scorer.score_encoded([PAIR]).loglikelihoods[0])
        est = torch.tensor(estimates, dtype=torch.float64)
        # unbiased: the mean over seeds is within 4 standard errors of the exact value
        assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(est)) + 1e-6
        errors[samples] = float(((est - exact) ** 2).mean().sqrt())
    assert errors[64] < errors[4] / 2.5  # ~ 1/sqrt(n): 16x the samples, ~4x smaller error
    assert errors[64] < 0.05 * abs(exact)


def test_reported_standard_error_matches_the_spread_over_seeds_when_rows_are_merged(toy_model):
    """At 64 samples a 5-token answer has only 31 distinct masks, so many samples share a row (every
    m = 5 sample does). Each merged sample is still its own Monte-Carlo sample: the standard error
    counts n = 64 values, not one per row. Counted once per row it comes out ~1.9x the true spread."""
    estimates, reported, rows = [], [], []
    for seed in range(200):
        scorer = _scorer(toy_model, samples=64, seed=seed, enumerate_small=False, batch_size=256)
        out = scorer.score_encoded([PAIR])
        estimates.append(out.loglikelihoods[0])
        reported.append(out.stderr[0])
        rows.append(out.rows)
    assert max(rows) < 40  # merging happened in every run (64 samples)
    spread = float(torch.tensor(estimates, dtype=torch.float64).std())  # the true error, measured
    typical = math.sqrt(sum(s * s for s in reported) / len(reported))
    # measured 1.14 (1.06 over 400 seeds: stratifying m makes the plain formula a little conservative;
    # 200 seeds give the spread to ~5 %); counting one value per merged row gives 1.94
    assert 0.8 < typical / spread < 1.45, (typical, spread)


def test_stratified_mask_counts_cover_every_count_evenly():
    pair = EncodedPair((), tuple(range(10, 18)))  # L = 8
    rows = plan_rows(pair, 0, samples=16, seed=3, enumerate_small=False)
    counts = sorted(len(r.positions) for r in rows for _ in range(r.count))
    assert counts == sorted(list(range(1, 9)) * 2)  # 16 samples: each m in 1..8 exactly twice
    assert sum(r.coef * len(r.positions) for r in rows) == pytest.approx(8.0)  # sum (L/m)/n * m = L
    # the two samples with m = L drew the same (full) mask: one row, one forward pass, weight for two
    full = [r for r in rows if len(r.positions) == 8]
    assert len(full) == 1 and full[0].count == 2 and full[0].coef == pytest.approx(2 * (8 / 8) / 16)


def test_one_token_answers_take_one_row_and_are_exact(toy_model):
    out = _scorer(toy_model, samples=32).score_encoded([EncodedPair((5, 6), (7,), (2,), (1,))])
    assert out.rows == 1 and out.exact == [True]


def test_batched_sparse_scoring_equals_the_naive_reference(micro_model, tokenizer):
    requests = [
        ("Soru: Ankara nerede? Cevap:", " İç Anadolu'da bulunan bir şehirdir"),
        ("Soru: Ankara nerede? Cevap:", " Karadeniz kıyısında"),
        ("Hava bugün", " çok güzel"),
    ]
    mask = tokenizer.mask_token_id
    scorer = ContinuationScorer(
        micro_model.eval(),
        tokenizer,
        mask_id=mask,
        config=LikelihoodConfig(samples=6, batch_size=5, enumerate_small=False),
    )
    out = scorer.score(requests)
    ref, naive_passes = reference_loglikelihood(micro_model, tokenizer, requests, mask_id=mask, samples=6)
    assert out.loglikelihoods == pytest.approx(ref, abs=1e-3)
    assert naive_passes == 18 and out.forward_passes == 4  # 18 rows in batches of 5


def test_scores_do_not_depend_on_batching_order_or_neighbours(micro_model, tokenizer):
    requests = [
        ("Bugün hava", " güneşli"),
        ("İstanbul'un en kalabalık semti", " Kadıköy'dür"),
        ("Merhaba", " dünya"),
    ]
    cfg = dict(samples=8, enumerate_small=False)
    mask = tokenizer.mask_token_id
    together = ContinuationScorer(
        micro_model, tokenizer, mask_id=mask, config=LikelihoodConfig(batch_size=64, **cfg)
    )
    alone = ContinuationScorer(
        micro_model, tokenizer, mask_id=mask, config=LikelihoodConfig(batch_size=3, **cfg)
    )
    all_at_once = together.score(requests).loglikelihoods
    one_by_one = [alone.score([r]).loglikelihoods[0] for r in reversed(requests)][::-1]
    assert all_at_once == pytest.approx(one_by_one, abs=1e-4)
    assert together.score(requests).loglikelihoods == all_at_once  # same seed: same numbers


def test_a_different_seed_draws_different_masks(micro_model, tokenizer):
    mask = tokenizer.mask_token_id
    req = [("Öğretmenimiz bugün bize", " ılık bir sonbahar gününde şiir okudu")]
    a = ContinuationScorer(micro_model, tokenizer, mask_id=mask, config=LikelihoodConfig(samples=4, seed=0))
    b = ContinuationScorer(micro_model, tokenizer, mask_id=mask, config=LikelihoodConfig(samples=4, seed=1))
    assert a.score(req).loglikelihoods != b.score(req).loglikelihoods


def test_a_long_context_is_cut_from_the_left_and_the_answer_is_kept(micro_model, tokenizer):
    mask = tokenizer.mask_token_id
    scorer = ContinuationScorer(micro_model, tokenizer, mask_id=mask, config=LikelihoodConfig(max_length=24))
    out = scorer.score([(" ".join(["çok uzun bir bağlam"] * 20), " kısa cevap")])
    assert out.truncated == 1 and out.answer_tokens[0] == len(
        encode_pair(tokenizer, "x", " kısa cevap").answer
    )
    with pytest.raises(ValueError, match="does not fit"):
        scorer.score([("", " uzun cevap" * 30)])


def test_the_context_kept_is_its_last_tokens(micro_model, tokenizer):
    """Distinct context tokens show which part survives the cut: scoring with the long context must
    equal scoring with its last tokens given outright, and differ from scoring with its first ones."""
    torch.manual_seed(0)
    with torch.no_grad():  # a wider initialisation, so the scores depend on the context
        for p in micro_model.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.2)
    bos, eos, mask = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id
    context, answer = tuple(range(100, 140)), (300, 301)  # 40 distinct context tokens
    pair = lambda ctx: EncodedPair(ctx, answer, (bos,), (eos,))  # noqa: E731
    cfg = LikelihoodConfig(max_length=24)  # room for 24 - 1 - 2 - 1 = 20 context tokens
    scorer = ContinuationScorer(micro_model, tokenizer, mask_id=mask, config=cfg)
    cut = scorer.score_encoded([pair(context)])
    assert cut.truncated == 1 and cut.exact == [True]  # 2 answer tokens: enumerated, no noise
    last = scorer.score_encoded([pair(context[-20:])])
    first = scorer.score_encoded([pair(context[:20])])
    assert last.truncated == first.truncated == 0
    assert cut.loglikelihoods[0] == pytest.approx(last.loglikelihoods[0], abs=1e-9)
    assert abs(cut.loglikelihoods[0] - first.loglikelihoods[0]) > 1e-3


# --- token alignment ---------------------------------------------------------------------------

WORDS = "bu bir cümle cevap evet hayır soru ankara türkiye'nin başkenti nedir".split()


def _bert_like() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer that wraps every text in [CLS] ... [SEP], as BERT does."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    tok.train_from_iterator(
        [" ".join(WORDS)] * 5 + ["Soru: Türkiye'nin başkenti nedir? Cevap: Ankara"], trainer
    )
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _gpt2_like() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no special tokens added at all."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 5, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.mark.parametrize("kind", ["ours", "bert", "gpt2"])
def test_answer_tokens_are_exactly_the_continuation_for_tokenizers_with_special_tokens(kind, tokenizer):
    tok = {"ours": lambda: tokenizer, "bert": _bert_like, "gpt2": _gpt2_like}[kind]()
    specials = set(tok.all_special_ids)
    context, answer = "Soru: Türkiye'nin başkenti nedir? Cevap:", " Ankara"
    pair = encode_pair(tok, context, answer)
    assert not specials & set(pair.answer) and not specials & set(pair.context)
    assert (
        tok.decode(list(pair.answer)).strip()
        == tok.decode(tok(answer, add_special_tokens=False)["input_ids"]).strip()
    )
    # the model sees exactly what tokenizer(context + answer) gives: specials only around the whole text
    assert pair.ids == tok(context + answer)["input_ids"]
    prefix, suffix = special_affixes(tok)
    assert pair.ids[: len(prefix)] == list(prefix) and pair.ids[len(pair.ids) - len(suffix) :] == list(suffix)


def test_the_naive_slice_would_let_a_special_token_into_the_answer():
    """The pitfall: slicing tokenizer(context + answer) at len(tokenizer(context)) with special tokens
    on both drops the first answer token and scores [SEP] instead."""
    tok = _bert_like()
    context, answer = "Soru: Türkiye'nin başkenti nedir? Cevap:", " Ankara"
    naive = tok(context + answer)["input_ids"][len(tok(context)["input_ids"]) :]
    assert tok.sep_token_id in naive
    assert tok.sep_token_id not in encode_pair(tok, context, answer).answer


def test_trailing_space_of_the_context_moves_into_the_answer(tokenizer):
    a = encode_pair(tokenizer, "Cevap: ", "Ankara")
    b = encode_pair(tokenizer, "Cevap:", " Ankara")
    assert a == b and tokenizer.decode(list(a.answer)) == " Ankara"


def test_a_token_straddling_the_border_is_scored_as_answer(tokenizer):
    # "Ankara" + "'da": BPE may merge across the cut; the answer must still end the sequence exactly
    pair = encode_pair(tokenizer, "Ankara", "'da")
    whole = tokenizer("Ankara'da", add_special_tokens=False)["input_ids"]
    assert list(pair.context) + list(pair.answer) == whole and len(pair.answer) >= 1
    assert tokenizer.decode(list(pair.answer)).endswith("da")


def test_a_trailing_newline_of_the_context_stays_in_the_context(tokenizer):
    """IronyTR's prompt ends in "\\n" (its own token under the project pre-tokenizer): each choice must
    be scored as its own tokens, not as ["\\n", " Evet"]."""
    from diffutron.evaluation.tasks import get_task

    task = get_task("ironytr")
    prompt = task.prompt.format(text="Harika, yine yağmur yağıyor, tam piknik havası.")
    assert prompt.endswith("\n")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for choice in task.choices:
        pair = encode_pair(tokenizer, prompt, task.delimiter + choice)
        assert list(pair.context[-len(newline) :]) == newline  # the context keeps its newline
        assert "\n" not in tokenizer.decode(list(pair.answer))
        assert tokenizer.decode(list(pair.answer)) == task.delimiter + choice
        whole = tokenizer(prompt + task.delimiter + choice, add_special_tokens=False)["input_ids"]
        assert list(pair.context) + list(pair.answer) == whole


def test_choices_of_equal_token_length_share_their_masks(tokenizer):
    """Common random numbers: the masks of a choice depend on the context and the answer's length,
    so two equally long choices differ only in their tokens; other lengths, or another context, differ."""
    ctx = "Kelime: kitap\nÇekimli biçim:"
    pairs = [encode_pair(tokenizer, ctx, " " + w) for w in ("kitaplarımızdan", "kitaplarınızdan", "kitap")]
    assert len(pairs[0].answer) == len(pairs[1].answer) > 5 and pairs[0].answer != pairs[1].answer

    def plan(pair, **kw):
        return [(r.positions, r.coef) for r in plan_rows(pair, 0, 16, seed=0, enumerate_small=False, **kw)]

    assert plan(pairs[0]) == plan(pairs[1])
    assert plan(pairs[0], common_masks=False) != plan(pairs[1], common_masks=False)
    other = encode_pair(tokenizer, "Kelime: ev\nÇekimli biçim:", " kitaplarımızdan")
    assert plan(other) != plan(pairs[0])
