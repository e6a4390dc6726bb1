"""The training step's speed-ups give the results of the plain path: mask-token suppression in the
head's bias, no attention mask for unpadded rows, torch.compile of the encoder, fused AdamW,
lazily read loss counts."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from diffutron.config import ConfigError, TrainingConfig, from_dict
from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.models import MaskedLMParts
from diffutron.models.heads import suppressed_logits, suppressing_linear
from diffutron.training.loop import _optimizer, _should_compile


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_suppression_in_the_bias_gives_the_same_logits_and_gradients_as_index_fill():
    torch.manual_seed(0)
    linear = nn.Linear(16, 40)
    x = torch.randn(12, 16)
    targets = torch.randint(0, 40, (12,))
    targets[targets == 3] = 4  # the suppressed token is never a target
    results = []
    for logits_of in (
        lambda: suppressed_logits(linear(x), 3),
        lambda: suppressing_linear(x, linear, 3),
    ):
        linear.zero_grad()
        logits = logits_of()
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        results.append((logits.detach(), linear.weight.grad.clone(), linear.bias.grad.clone()))
    (la, wa, ba), (lb, wb, bb) = results
    assert torch.isinf(lb[:, 3]).all() and torch.isfinite(lb[:, torch.arange(40) != 3]).all()
    assert torch.equal(la, lb)
    torch.testing.assert_close(wb, wa, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bb, ba, rtol=1e-6, atol=1e-7)
    assert bb[3] == 0 and (wb[3] == 0).all()  # nothing is learnt for the suppressed token


def test_no_attention_mask_equals_an_all_ones_mask(micro_model, tokenizer):
    # packed pre-training rows have no padding: the loop passes no mask, which must mean "attend everywhere"
    parts = MaskedLMParts(micro_model.eval())
    ids = torch.randint(5, len(tokenizer), (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = parts.encode(ids, None)
        ones = parts.encode(ids, torch.ones_like(ids))
    torch.testing.assert_close(plain, ones, rtol=1e-5, atol=1e-6)


def _native_capability() -> str:
    if torch.cpu._is_avx512_supported():
        return "avx512"
    return "avx2" if torch.cpu._is_avx2_supported() else "default"


_CAPABILITY = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()


@pytest.mark.skipif(
    _CAPABILITY not in ("", _native_capability()),
    reason="ATEN_CPU_CAPABILITY below this CPU's own also sets inductor's vector width while inductor still "
    "compiles with -march=native: a mix no real CPU runs (NaN under avx2, no build under default on an "
    "AVX-512 CPU); docs/testing.md, dispatch matrix",
)
def test_compiled_encoder_gives_the_eager_loss_and_gradients_and_keeps_parameter_names(
    micro_model, tokenizer
):
    ids = torch.randint(5, len(tokenizer), (2, 32), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    eager = MaskedLMParts(micro_model)
    compiled_model = copy.deepcopy(micro_model)
    compiled = MaskedLMParts(compiled_model)
    keys = list(compiled.state_dict())
    compiled.compile_encoder()
    assert list(compiled.state_dict()) == keys  # checkpoints of a compiled run load into a plain model
    results = {}
    for name, parts in (("eager", eager), ("compiled", compiled)):
        out = mdlm_loss(
            parts,
            ids,
            maskable,
            schedule=get_schedule("linear"),
            mask_id=4,
            generator=torch.Generator().manual_seed(3),
        )
        out.loss.backward()
        results[name] = (out.loss.detach(), _grads(parts.model))
    torch.testing.assert_close(results["compiled"][0], results["eager"][0], rtol=1e-5, atol=1e-6)
    for key, g in results["eager"][1].items():
        torch.testing.assert_close(results["compiled"][1][key], g, rtol=1e-4, atol=1e-6, msg=key)


def test_compile_setting_is_checked_and_auto_is_off_on_cpu():
    assert _should_compile("auto", torch.device("cpu")) is False
    assert _should_compile("auto", torch.device("cuda")) is True
    assert _should_compile("auto", torch.device("cuda"), processes=2) is False  # DDP/FSDP: only when asked
    assert _should_compile(True, torch.device("cpu")) is True
    assert _should_compile(False, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="training.compile"):
        _should_compile("yes", torch.device("cpu"))
    assert from_dict(TrainingConfig, {"compile": True}).compile is True
    assert from_dict(TrainingConfig, {"compile": "auto"}).compile == "auto"
    with pytest.raises(ConfigError, match="compile"):
        from_dict(TrainingConfig, {"compile": 3})


def test_optimizer_is_fused_adamw_with_the_configured_groups(micro_model):
    opt = _optimizer(micro_model, TrainingConfig(weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    # a fused step moves the parameters as the plain for-loop AdamW does
    plain_model = copy.deepcopy(micro_model)
    plain = torch.optim.AdamW(
        [
            {"params": g["params"], "weight_decay": g["weight_decay"]}
            for g in _optimizer(plain_model, TrainingConfig(weight_decay=0.05)).param_groups
        ],
        lr=1e-3,
        betas=(0.9, 0.98),
        foreach=False,
    )
    for model, o in ((micro_model, opt), (plain_model, plain)):
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.01)
        o.step()
    for (name, a), b in zip(micro_model.named_parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_loss_counts_are_read_lazily_and_right(micro_model, tokenizer):
    ids = torch.randint(5, len(tokenizer), (4, 24), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[0, :10] = False
    out = mdlm_loss(
        MaskedLMParts(micro_model),
        ids,
        maskable,
        schedule=get_schedule("linear"),
        mask_id=4,
        generator=torch.Generator().manual_seed(2),
    )
    assert isinstance(out.nelbo, torch.Tensor) and out.nelbo.requires_grad is False
    assert out.n_maskable == int(maskable.sum()) == 4 * 24 - 10
    assert 0 < out.n_masked == int(out.masked.sum()) <= out.n_maskable
    assert not out.masked[0, :10].any()
    assert out.nelbo_sum == pytest.approx(float(out.loss.detach()) * out.n_maskable, rel=1e-5)
