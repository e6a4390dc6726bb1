"""Exact chain-rule likelihoods (evaluation/sequential.py) and windows with context (perplexity.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, ModernBertForMaskedLM

from diffutron.diffusion import elbo_perplexity, get_schedule
from diffutron.evaluation.perplexity import bits_per_unit, text_windows
from diffutron.evaluation.sequential import causal_nll, inorder_nll, left_to_right
from diffutron.models.heads import MaskedLMParts
from diffutron.models.presets import preset_config
from diffutron.text.tokenizer import train_tokenizer

SENTENCES = [
    "Türkiye Cumhuriyeti 29 Ekim 1923'te ilan edildi.",
    "İstanbul'un tarihî yarımadası, İzmir'in kıyıları ve Ankara'nın ılık akşamları.",
    "Çocuklarımızın geleceği için okullarımızı güçlendirmeliyiz.",
    "Milletimiz büyük bir imtihandan geçti; ıslahat ve iktisat meseleleri öncelikliydi.",
]


class ToyJoint(nn.Module):
    """A 'masked LM' that knows a joint distribution over all sequences of length L of V tokens and
    answers every masked position with its exact conditional given the visible tokens (mask id V)."""

    def __init__(self, vocab: int, length: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.seqs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))  # [V^L, L]
        p = torch.rand(len(self.seqs), generator=g).pow(3).add(1e-3)  # uneven: some sequences rare
        self.p = p / p.sum()
        self.vocab, self.length = vocab, length
        self.dummy = nn.Parameter(torch.zeros(1))  # something for next(parameters())

    def forward(self, input_ids, attention_mask=None):
        visible = input_ids != self.vocab  # [B, L]
        agree = (self.seqs[None] == input_ids[:, None]) | ~visible[:, None]  # [B, S, L]
        weight = self.p[None] * agree.all(dim=2)  # [B, S]: sequences consistent with what is visible
        onehot = nn.functional.one_hot(self.seqs, self.vocab + 1).float()  # [S, L, V+1]
        marg = torch.einsum("bs,slv->blv", weight, onehot)
        return type("Out", (), {"logits": marg.clamp(min=1e-30).log()})

    def log_prob(self, x: torch.Tensor) -> float:
        return float(self.p[(self.seqs == x).all(dim=1)].log())


def test_inorder_is_the_exact_likelihood_of_a_known_distribution():
    toy = ToyJoint(vocab=3, length=3)
    ids = toy.seqs.clone()
    scored = torch.ones_like(ids, dtype=torch.bool)
    r = inorder_nll(toy, ids, scored, mask_id=3, batch_size=7)
    expected = torch.tensor([-toy.log_prob(x) for x in ids], dtype=torch.float64)
    assert torch.allclose(r.nll, expected, atol=1e-5)
    assert math.isclose(float((-r.nll).exp().sum()), 1.0, rel_tol=1e-5)  # a proper distribution
    # for the exact model every order gives the same value (the chain rule in any order)
    rev = torch.tensor([2, 1, 0]).expand_as(ids)
    assert torch.allclose(inorder_nll(toy, ids, scored, mask_id=3, order=rev).nll, expected, atol=1e-5)


def test_visible_positions_are_conditioned_on_not_scored():
    toy = ToyJoint(vocab=3, length=3, seed=1)
    x = toy.seqs[17:18]
    scored = torch.tensor([[False, True, True]])
    r = inorder_nll(toy, x, scored, mask_id=3)
    # -log p(x1, x2 | x0) = -log p(x) + log p(x0)
    p_x0 = float(toy.p[toy.seqs[:, 0] == x[0, 0]].sum())
    assert math.isclose(float(r.nll[0]), -toy.log_prob(x[0]) + math.log(p_x0), rel_tol=1e-5)
    assert int(r.tokens[0]) == 2


def test_elbo_is_tight_for_the_exact_model_and_never_below_inorder():
    toy = ToyJoint(vocab=3, length=3, seed=2)
    ids = toy.seqs[[0, 5, 13, 26]].repeat(64, 1)
    scored = torch.ones_like(ids, dtype=torch.bool)
    exact = inorder_nll(toy, ids, scored, mask_id=3)
    elbo = elbo_perplexity(
        MaskedLMParts(toy), ids, schedule=get_schedule("linear"), mask_id=3, t_samples=64, batch_size=256
    )
    # the true model's ELBO equals its likelihood: only Monte-Carlo noise separates them
    assert abs(elbo.nelbo_per_token - exact.nll_per_token) < 4 * elbo.stderr_nelbo + 1e-3
    assert elbo.nelbo_per_token > exact.nll_per_token - 4 * elbo.stderr_nelbo


def _tiny_modernbert(vocab: int = 40, seed: int = 0) -> ModernBertForMaskedLM:
    torch.manual_seed(seed)
    cfg = preset_config(
        "tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    cfg.vocab_size = vocab
    cfg.initializer_range = 0.5  # far from uniform predictions: orders then really differ
    return ModernBertForMaskedLM(cfg).eval()


def test_elbo_is_the_average_over_all_orders():
    """Linear schedule: NELBO of a window == mean over every reveal order of the ordered NLL."""
    model = _tiny_modernbert()
    mask_id, length = 39, 4
    x = torch.tensor([[5, 17, 3, 22]])
    scored = torch.ones_like(x, dtype=torch.bool)
    orders = torch.tensor([list(p) for p in itertools.permutations(range(length))])  # rank of each pos
    nlls = inorder_nll(
        model, x.expand(len(orders), -1), scored.expand(len(orders), -1), mask_id=mask_id, order=orders
    ).nll
    any_order = float(nlls.mean())
    elbo = elbo_perplexity(
        MaskedLMParts(model),
        x.repeat(256, 1),
        schedule=get_schedule("linear"),
        mask_id=mask_id,
        t_samples=32,
        batch_size=256,
        seed=3,
    )
    mc = elbo.nelbo_per_token * length
    assert abs(mc - any_order) < 4 * elbo.stderr_nelbo * length
    # the orders genuinely differ for a random model, so the identity is not a coincidence of equal terms
    assert float(nlls.max() - nlls.min()) > 0.05


def test_order_must_be_a_permutation_of_the_scored_positions():
    model = _tiny_modernbert()
    x = torch.tensor([[5, 17, 3, 22]])
    scored = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(ValueError, match="order"):
        inorder_nll(model, x, scored, mask_id=39, order=torch.tensor([[0, 0, 1, 2]]))
    assert left_to_right(torch.tensor([[False, True, True, False]])).tolist() == [[-1, 0, 1, -1]]


def test_causal_nll_matches_the_models_own_loss():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    ar = LlamaForCausalLM(cfg).eval()
    x = torch.randint(0, 50, (3, 12))
    scored = torch.ones_like(x, dtype=torch.bool)
    scored[:, 0] = False
    r = causal_nll(ar, x, scored, batch_size=2)
    with torch.no_grad():
        loss = float(ar(input_ids=x, labels=x).loss)
    assert math.isclose(r.nll_per_token, loss, rel_tol=1e-5)
    with pytest.raises(ValueError, match="context"):
        causal_nll(ar, x, torch.ones_like(x, dtype=torch.bool))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES * 20, vocab_size=300, min_frequency=1, model_max_length=64)


def test_windows_with_context_score_every_text_token_once(tokenizer):
    ids, scored, attention, counts = text_windows(tokenizer, SENTENCES, max_length=8, context=1)
    assert not scored[:, 0].any()  # every window starts with something visible
    n_text = sum(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES)
    assert int(scored.sum()) == n_text
    # each window's first token is the last token of the window before it (or <bos>)
    firsts = ids[:, 0].tolist()
    assert firsts.count(tokenizer.bos_token_id) == len(SENTENCES)
    assert counts["characters"] == sum(len(s) for s in SENTENCES)
    # context=0 keeps the old windows: each window scored from its first text token
    ids0, scored0, _, _ = text_windows(tokenizer, SENTENCES, max_length=8)
    assert int(scored0.sum()) == n_text and scored0[:, 0].any()


def test_bits_per_unit():
    assert math.isclose(bits_per_unit(math.log(2) * 12, 6), 2.0)
    assert bits_per_unit(1.0, 0) == pytest.approx(1 / math.log(2))  # no units: never a division by zero
