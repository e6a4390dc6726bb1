import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from diffutron.diffusion import SCHEDULES, elbo_perplexity, get_schedule, mask_tokens, mdlm_loss, sample_times
from diffutron.models.heads import MaskedLMParts


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_weight_equals_minus_alpha_prime_over_one_minus_alpha(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64).requires_grad_(True)
    alpha = s.alpha(t)
    (grad,) = torch.autograd.grad(alpha.sum(), t)  # numerical derivative via autograd of alpha itself
    expected = -grad / (1 - alpha.detach())
    torch.testing.assert_close(s.weight(t.detach()), expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s.alpha_prime(t.detach()), grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_endpoints_and_reveal_probability(name):
    s = get_schedule(name)
    assert float(s.alpha(torch.tensor(0.0))) == pytest.approx(1.0, abs=1e-6)
    assert float(s.alpha(torch.tensor(1.0))) == pytest.approx(0.0, abs=2e-3)
    t, u = torch.tensor(0.8), torch.tensor(0.5)
    expected = (s.alpha(u) - s.alpha(t)) / (1 - s.alpha(t))
    assert float(s.reveal_probability(t, u)) == pytest.approx(float(expected))


def test_unknown_schedule_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match="linear"):
        get_schedule("quadratic")


def test_stratified_times_cover_the_unit_interval_evenly():
    t = sample_times(8, generator=torch.Generator().manual_seed(0))
    bins = torch.floor(((t - 1e-3) / (1 - 1e-3)) * 8).long()
    assert sorted(bins.tolist()) == list(range(8))


def test_stratified_times_are_systematic_not_antithetic():
    """One shared offset, evenly spaced (systematic sampling): the name says so, and the pairs
    t, 1 - t of antithetic sampling are not what it draws."""
    t = sample_times(4, eps=0.0, stratified=True, generator=torch.Generator().manual_seed(3)).double()
    gaps = torch.diff(torch.sort(t).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 0.25), atol=1e-6)
    iid = sample_times(4, eps=0.0, stratified=False, generator=torch.Generator().manual_seed(3)).double()
    assert not torch.allclose(torch.diff(torch.sort(iid).values), torch.full((3,), 0.25, dtype=torch.float64))
    from diffutron.config import DiffusionConfig

    assert DiffusionConfig().stratified_t and not hasattr(DiffusionConfig(), "antithetic")


def test_cosine_masks_fast_near_zero_and_slowly_near_one():
    cos, lin = get_schedule("cosine"), get_schedule("linear")
    near0, near1 = torch.tensor(0.05), torch.tensor(0.95)
    assert cos.mask_probability(near0) > 1.5 * lin.mask_probability(near0)
    assert cos.alpha_prime(near1).abs() < 0.2 * lin.alpha_prime(near1).abs()  # the rate, not the level
    assert "fast near t = 0" in type(cos).__doc__


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_empirical_masking_rate_matches_one_minus_alpha(name):
    s = get_schedule(name)
    ids = torch.full((4, 50_000), 7)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    _, masked = mask_tokens(ids, maskable, t, s, mask_id=4, generator=torch.Generator().manual_seed(0))
    rate = masked.float().mean(dim=1)
    torch.testing.assert_close(rate, 1 - s.alpha(t), atol=0.01, rtol=0)


def test_non_maskable_positions_are_never_masked():
    ids = torch.arange(100).repeat(3, 1) + 10
    maskable = torch.zeros_like(ids, dtype=torch.bool)
    maskable[:, 50:] = True
    noisy, masked = mask_tokens(
        ids,
        maskable,
        torch.full((3,), 0.99),
        get_schedule("linear"),
        4,
        generator=torch.Generator().manual_seed(1),
    )
    assert not masked[:, :50].any() and torch.equal(noisy[:, :50], ids[:, :50])
    assert masked[:, 50:].float().mean() > 0.9


def _naive_loss(model, ids, maskable, t, schedule, mask_id, generator, normalization):
    """Reference: full logits everywhere, plain CE, explicit weights, explicit loops."""
    noisy, masked = mask_tokens(ids, maskable, t, schedule, mask_id, generator=generator)
    logits = model(input_ids=noisy).logits.float()
    logits[..., mask_id] = -math.inf
    total, rows = 0.0, []
    for b in range(ids.shape[0]):
        row = 0.0
        for i in range(ids.shape[1]):
            if masked[b, i]:
                row = row + schedule.weight(t[b]) * F.cross_entropy(logits[b, i][None], ids[b, i][None])
        rows.append(row / maskable[b].sum())
        total = total + row
    if normalization == "token":
        return total / maskable.sum()
    return sum(rows) / len(rows)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_loss_equals_naive_reference(micro_model, tokenizer, normalization):
    torch.manual_seed(0)
    ids = torch.randint(5, len(tokenizer), (3, 24))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[2, 18:] = False
    t = torch.tensor([0.2, 0.5, 0.9])
    s = get_schedule("linear")
    out = mdlm_loss(
        MaskedLMParts(micro_model),
        ids,
        maskable,
        schedule=s,
        mask_id=4,
        t=t,
        generator=torch.Generator().manual_seed(3),
        normalization=normalization,
    )
    ref = _naive_loss(micro_model, ids, maskable, t, s, 4, torch.Generator().manual_seed(3), normalization)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_masked_only_head_and_chunked_ce_match_the_full_head_in_loss_and_gradients(micro_model, tokenizer):
    ids = torch.randint(5, len(tokenizer), (4, 32), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    s = get_schedule("cosine")
    parts = MaskedLMParts(micro_model)
    results = {}
    for name, kw in {
        "full": dict(sparse_head=False),
        "sparse": dict(sparse_head=True),
        "chunked": dict(sparse_head=True, max_logit_elements=len(tokenizer) * 5),
    }.items():
        micro_model.zero_grad()
        out = mdlm_loss(
            parts, ids, maskable, schedule=s, mask_id=4, generator=torch.Generator().manual_seed(7), **kw
        )
        out.loss.backward()
        results[name] = (out.loss.detach(), _grads(micro_model))
    for name in ("sparse", "chunked"):
        torch.testing.assert_close(results[name][0], results["full"][0], rtol=1e-5, atol=1e-6)
        for key, g in results["full"][1].items():
            torch.testing.assert_close(results[name][1][key], g, rtol=1e-4, atol=1e-6, msg=key)


def test_the_mask_token_is_never_predicted(micro_model, tokenizer):
    # Make the mask token overwhelmingly likely: the loss must still be finite and the same as if absent.
    with torch.no_grad():
        micro_model.decoder.bias[4] = 1e4
    ids = torch.randint(5, len(tokenizer), (2, 16))
    out = mdlm_loss(
        MaskedLMParts(micro_model),
        ids,
        torch.ones_like(ids, dtype=torch.bool),
        schedule=get_schedule("linear"),
        mask_id=4,
        t=torch.tensor([0.5, 0.9]),
    )
    assert torch.isfinite(out.loss) and out.loss < 100


def test_elbo_perplexity_is_deterministic_and_reports_stderr(micro_model, tokenizer):
    blocks = torch.randint(5, len(tokenizer), (6, 32), generator=torch.Generator().manual_seed(0))
    parts = MaskedLMParts(micro_model)
    a = elbo_perplexity(parts, blocks, schedule=get_schedule("linear"), mask_id=4, t_samples=4, seed=1)
    b = elbo_perplexity(parts, blocks, schedule=get_schedule("linear"), mask_id=4, t_samples=4, seed=1)
    assert a.perplexity == b.perplexity and a.tokens == 6 * 32 and a.sequences == 6
    assert math.isfinite(a.stderr_nelbo) and a.stderr_nelbo > 0
    # an untrained model is about as good as uniform over the vocabulary, not wildly better
    assert a.perplexity > len(tokenizer) / 4


class _Unigram(torch.nn.Module):
    """A masked LM whose logits ignore the input: p(x) = softmax(bias), the same at every position."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(vocab, generator=torch.Generator().manual_seed(0)))
        self.config = type("C", (), {"model_type": "unigram", "vocab_size": vocab})()

    def forward(self, input_ids, attention_mask=None):
        return type("O", (), {"logits": self.bias.expand(*input_ids.shape, -1)})()


@pytest.mark.parametrize("estimator", ["time", "count"])
@pytest.mark.parametrize("name, kwargs", [("loglinear", {"eps": 0.3}), ("linear", {}), ("cosine", {})])
def test_elbo_perplexity_is_an_upper_bound_for_every_schedule(name, kwargs, estimator):
    """For one-token sequences the exact NLL is CE(x | [M]); the ELBO must not read below it. Without
    the prior term a loglinear schedule's ``time`` estimate reads (1 - eps) CE: 30 % low here."""
    model = _Unigram(12)
    blocks = torch.randint(5, 12, (400, 1), generator=torch.Generator().manual_seed(1))
    logp = torch.log_softmax(model.bias.detach().index_fill(0, torch.tensor([4]), float("-inf")), -1)
    nll = float(-logp[blocks.squeeze(1)].mean())
    r = elbo_perplexity(
        MaskedLMParts(model), blocks, schedule=get_schedule(name, **kwargs), mask_id=4, t_samples=16,
        estimator=estimator,
    )  # fmt: skip
    assert r.nelbo_per_token == pytest.approx(nll, rel=0.08)


def test_elbo_perplexity_does_not_mask_padding_given_an_attention_mask(micro_model, tokenizer):
    blocks = torch.randint(5, len(tokenizer), (4, 16), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(blocks)
    attention[:, 10:] = 0
    parts, linear = MaskedLMParts(micro_model), get_schedule("linear")
    default = elbo_perplexity(
        parts, blocks, schedule=linear, mask_id=4, attention_mask=attention, t_samples=2
    )
    explicit = elbo_perplexity(
        parts,
        blocks,
        schedule=linear,
        mask_id=4,
        attention_mask=attention,
        maskable=attention.bool(),
        t_samples=2,
    )
    assert default.tokens == 40 and default.nelbo_per_token == explicit.nelbo_per_token


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: t on the CPU, inputs on the GPU")
def test_mdlm_loss_takes_t_on_the_cpu_for_gpu_inputs(micro_model, tokenizer):
    model = micro_model.cuda()
    ids = torch.randint(5, len(tokenizer), (2, 16)).cuda()
    out = mdlm_loss(
        MaskedLMParts(model), ids, torch.ones_like(ids, dtype=torch.bool), schedule=get_schedule("linear"),
        mask_id=4, t=torch.tensor([0.3, 0.8]),
    )  # fmt: skip
    assert out.loss.is_cuda and torch.isfinite(out.loss)


def _exact_linear_nelbo(parts: MaskedLMParts, blocks: torch.Tensor, mask_id: int) -> torch.Tensor:
    """[N] the exact continuous-time NELBO of each sequence under the linear schedule, by enumerating
    every mask: a set M of k positions is masked at time t with probability t^k (1 - t)^(L - k) and
    weighted by w(t) = 1/t, so its weight is the Beta integral (k - 1)! (L - k)! / L!."""
    n, length = blocks.shape
    subsets = [s for k in range(1, length + 1) for s in itertools.combinations(range(length), k)]
    masks = torch.zeros(len(subsets), length, dtype=torch.bool)
    for j, s in enumerate(subsets):
        masks[j, list(s)] = True
    k = masks.sum(1)
    weight = torch.tensor(
        [math.factorial(int(m) - 1) * math.factorial(length - int(m)) / math.factorial(length) for m in k],
        dtype=torch.float64,
    )
    ids = blocks[:, None, :].expand(n, len(subsets), length).reshape(-1, length)
    full = masks[None].expand(n, -1, -1).reshape(-1, length)
    noisy = torch.where(full, torch.full_like(ids, mask_id), ids)
    with torch.no_grad():
        logits = parts.logits(noisy).double()
    logits[..., mask_id] = float("-inf")
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none")
    ce = (ce.reshape(n, len(subsets), length) * masks).sum(-1)  # CE summed over the masked positions
    return (ce * weight).sum(1)


@pytest.mark.parametrize("estimator", ["time", "count"])
def test_elbo_perplexity_estimates_the_exact_elbo_within_its_standard_error(micro_model, tokenizer, estimator):
    """Sequences of 5 tokens have 31 masks, so the continuous-time ELBO of a real (random) model can be
    computed exactly; the stratified estimate must land within a few of its standard errors, and the
    estimate per token averages over t-samples (a sum would be t_samples times too large)."""
    mask_id = tokenizer.mask_token_id
    blocks = torch.randint(5, len(tokenizer), (64, 5), generator=torch.Generator().manual_seed(0))
    parts = MaskedLMParts(micro_model.eval())
    exact = float(_exact_linear_nelbo(parts, blocks, mask_id).sum()) / blocks.numel()
    assert 0.8 * math.log(len(tokenizer)) < exact < 1.2 * math.log(len(tokenizer))  # about uniform
    for t_samples in (4, 8):
        r = elbo_perplexity(
            parts, blocks, schedule=get_schedule("linear"), mask_id=mask_id, t_samples=t_samples, seed=0,
            estimator=estimator,
        )  # fmt: skip
        assert r.tokens == 320 and 0 < r.stderr_nelbo < 0.2 * exact
        assert abs(r.nelbo_per_token - exact) < 3 * r.stderr_nelbo, (r.nelbo_per_token, exact, r.stderr_nelbo)
        assert r.perplexity == pytest.approx(math.exp(r.nelbo_per_token))


def test_count_estimator_masks_exactly_k_uniform_maskable_positions_with_weight_n_over_k():
    from diffutron.diffusion.masking import mask_counts, sample_counts

    g = torch.Generator().manual_seed(0)
    ids = torch.arange(10, 10 + 8 * 12).reshape(8, 12)
    maskable = torch.ones(8, 12, dtype=torch.bool)
    maskable[:, :4] = False  # a prompt: never masked
    maskable[7] = False  # a row with nothing to mask
    # systematic over the batch: 8 rows of n = 8 get the counts 1..8 once each (row 7 has n = 0)
    full = torch.ones(8, 8, dtype=torch.bool)
    assert sorted(sample_counts(full, generator=g).tolist()) == list(range(1, 9))
    noisy, masked, weights = mask_counts(ids, maskable, 3, generator=g)
    n = maskable.sum(1)
    k = masked.sum(1)
    assert not (masked & ~maskable).any() and (noisy[masked] == 3).all() and (noisy[~masked] == ids[~masked]).all()
    assert ((k >= 1) | (n == 0)).all() and (k <= n).all() and k[7] == 0
    torch.testing.assert_close(weights[:7], n[:7].float() / k[:7].float())
    assert weights[7] == 0
    # the masked set is a uniform k-subset: each maskable position equally often over many draws
    hits = torch.zeros(12)
    for _ in range(2000):
        _, m, _ = mask_counts(ids[:1], maskable[:1], 3, k=torch.tensor([3]), generator=g)
        hits += m[0].float()
    assert hits[:4].sum() == 0 and hits.sum() == 6000
    assert (hits[4:] / 6000 - 1 / 8).abs().max() < 0.02


def test_count_estimator_estimates_the_exact_elbo_with_less_variance_than_time(micro_model, tokenizer):
    """Both draws estimate the same continuous-time NELBO (masking.py derives why): their means must
    land within a few standard errors of the exact value, computed by enumerating every mask of
    5-token sequences; the count draw removes the binomial noise of the time draw."""
    mask_id = tokenizer.mask_token_id
    blocks = torch.randint(5, len(tokenizer), (64, 5), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(blocks, dtype=torch.bool)
    parts = MaskedLMParts(micro_model.eval())
    exact = float(_exact_linear_nelbo(parts, blocks, mask_id).sum()) / blocks.numel()
    draws = {}
    with torch.no_grad():
        for estimator in ("time", "count"):
            g = torch.Generator().manual_seed(1)
            draws[estimator] = torch.tensor([
                float(mdlm_loss(parts, blocks, maskable, schedule=get_schedule("linear"), mask_id=mask_id,
                                generator=g, estimator=estimator).loss)
                for _ in range(60)
            ], dtype=torch.float64)  # fmt: skip
    for estimator, d in draws.items():
        stderr = float(d.std() / math.sqrt(len(d)))
        assert abs(float(d.mean()) - exact) < 3.5 * stderr, (estimator, float(d.mean()), exact, stderr)
    assert draws["count"].var() < 0.7 * draws["time"].var(), (draws["count"].var(), draws["time"].var())

