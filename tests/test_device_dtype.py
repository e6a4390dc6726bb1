"""Device and precision (issue 21): the sampler's key/value cache in bf16 (autocast and bf16 weights)
against fp32 on a model with clear margins, the commands' ``--device``/``--dtype`` reaching the model,
the loss's random draws on the generator's device, and the chunked head under autocast (equal to the
unchunked one, a frozen decoder cast once per forward). Everything runs on the CPU by the code paths a
GPU takes; the CUDA cases run where a GPU is present."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import MICRO, TURKISH_SENTENCES
from torch.profiler import profile

from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.hardware import ENV_OVERRIDE
from diffutron.models import MaskedLMParts
from diffutron.models.checkpoint import resolve_device_dtype
from diffutron.sampling import generate, preset

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# -- the key/value cache in bf16 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tr_corpus):
    """This module's own (it overrides conftest's): 2,000 pieces, so the four sentences below are
    whole words, ~30 tokens each, which the micro model memorises in about a thousand steps (with
    conftest's 600 pieces it still mixed up pieces of one word at a loss of 0.05)."""
    from diffutron.text.tokenizer import train_tokenizer

    return train_tokenizer(tr_corpus + TURKISH_SENTENCES, vocab_size=2000, min_frequency=2)


def _writes(model, tokenizer, texts: list[str]) -> bool:
    """Whether greedy fp32 decoding (the settings of the cache test below) continues every sentence."""
    prompts = [" ".join(t.split()[:3]) for t in texts]
    cfg = preset("diffutron", max_new_tokens=16, block_size=8, steps=16)
    out = generate(model.eval(), tokenizer, prompts, cfg, schedule=get_schedule("linear"))
    model.train()
    return all(t.startswith(p + o.rstrip()) for t, p, o in zip(texts, prompts, out.texts, strict=True))


@pytest.fixture(scope="module")
def memorised(tokenizer):
    """A micro ModernBERT trained (about 10 s) on four sentences until it writes their continuations
    with clear margins: a random model's near-ties flip under any rounding, and one flipped commit
    changes the rest of its row, so agreement there would say nothing about the cache. It trains in
    rounds until greedy decoding writes all four, then one more round to widen the margins."""
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, **MICRO))
    texts = TURKISH_SENTENCES[:4]
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    ids, attention = enc["input_ids"], enc["attention_mask"]
    parts = MaskedLMParts(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    rounds_after = None
    for round_ in range(16):  # 250 steps a round, 4,000 at most
        for _ in range(250):
            out = mdlm_loss(
                parts,
                ids,
                attention.bool(),
                schedule=get_schedule("linear"),
                mask_id=tokenizer.mask_token_id,
                attention_mask=attention,
                generator=g,
                estimator="count",
            )
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        if rounds_after is None and _writes(model, tokenizer, texts):
            rounds_after = round_ + 1
        if rounds_after is not None and round_ >= rounds_after:
            break
    assert rounds_after is not None, "the micro model never memorised its four sentences"
    return model.eval(), texts


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_the_cached_sampler_runs_in_bf16_and_agrees_with_fp32_greedy(memorised, tokenizer, cache):
    model, texts = memorised
    prompts = [" ".join(t.split()[:3]) for t in texts]
    cfg = preset("diffutron", max_new_tokens=16, block_size=8, steps=16, cache=cache)
    kw = dict(schedule=get_schedule("linear"), mask_id=tokenizer.mask_token_id)
    ref = generate(model, tokenizer, prompts, cfg, **kw)
    # the margins are clear: fp32 writes the memorised continuation
    assert texts[0].startswith(prompts[0] + ref.texts[0].rstrip()) and len(ref.texts[0].split()) >= 3
    with torch.autocast("cpu", dtype=torch.bfloat16):  # storage in fp32, keys in bf16 failed here
        autocast = generate(model, tokenizer, prompts, cfg, **kw)
    bf16 = generate(copy.deepcopy(model).to(torch.bfloat16), tokenizer, prompts, cfg, **kw)
    expected = [t for row in ref.token_ids for t in row]
    for out in (autocast, bf16):
        got = [t for row in out.token_ids for t in row]
        agree = sum(a == b for a, b in zip(expected, got, strict=False)) / len(expected)
        assert agree >= 0.9, agree  # measured: 1.0 (59 of 59 tokens) for both caches, both ways


def test_the_cache_keeps_keys_in_their_dtype(memorised, tokenizer):
    from diffutron.models.kv_cache import MODE_IDS, EncoderKVCache

    model, _ = memorised
    parts = MaskedLMParts(model)
    ids = torch.randint(5, len(tokenizer), (2, 20), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    current = torch.zeros_like(ids, dtype=torch.bool)
    current[:, 8:12] = True
    cache = EncoderKVCache(parts)
    cache.add(2)
    kw = dict(current=current, block=torch.tensor([1, 1]), mode=torch.tensor([MODE_IDS["dual"]] * 2))
    with torch.no_grad():
        plain = parts.encode(ids, attention).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            refreshed = cache.encode(torch.arange(2), ids, attention, **kw)
            reused = cache.encode(torch.arange(2), ids, attention, **kw)
    assert cache.keys[0].dtype == torch.bfloat16 and cache.partial == 2
    for hidden in (refreshed, reused):
        torch.testing.assert_close(hidden.float()[:, 8:12], plain[:, 8:12], rtol=0.05, atol=0.05)


# -- --device and --dtype ---------------------------------------------------------------------------


def test_auto_resolves_to_cuda_bf16_or_cpu_fp32(monkeypatch):
    monkeypatch.setenv(ENV_OVERRIDE, "none")  # a CPU without bf16 units (tests/test_precision.py: with)
    device, dtype = resolve_device_dtype("auto", "auto")
    expected = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    assert (device.type, dtype) == expected
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", "fp16")[1] == torch.float16


@pytest.mark.parametrize(
    "device, dtype, message",
    [
        ("gpu", "auto", "'gpu' is not a torch device"),
        ("cpu", "half", "--dtype 'half': choose auto, fp32, bf16, fp16"),
        ("cpu", "bfloat16", "--dtype 'bfloat16'"),
    ]
    + ([] if torch.cuda.is_available() else [("cuda", "auto", "CUDA is not available")]),
)
def test_bad_device_or_dtype_is_a_clear_error(device, dtype, message):
    with pytest.raises(ValueError, match=message):
        resolve_device_dtype(device, dtype)


@pytest.fixture
def checkpoint(tmp_path, reading_model, tokenizer):
    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint

    out = tmp_path / "model"
    save_checkpoint(out, reading_model, tokenizer, DiffusionSettings(mask_token_id=tokenizer.mask_token_id))
    return str(out)


class Reached(Exception):
    """Raised by a spy once it has seen the model: the command need not run to its end."""


def _spy(monkeypatch, module, name: str, seen: list, then_raise: bool = True):
    original = getattr(module, name)

    def spy(model, *args, **kwargs):
        p = next((model.model if hasattr(model, "settings") else model).parameters())  # evaluate: a Loaded
        seen.append((p.device.type, p.dtype))
        if then_raise:
            raise Reached
        return original(model, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.mark.parametrize(
    "dtype, expected", [("bf16", torch.bfloat16), ("fp32", torch.float32), ("auto", None)]
)
def test_generate_loads_the_weights_in_the_dtype_asked(monkeypatch, capsys, checkpoint, dtype, expected):
    import diffutron.sampling as sampling
    from diffutron.cli import main

    monkeypatch.setenv(ENV_OVERRIDE, "none")  # auto on a CPU without bf16 units: fp32
    seen: list = []
    _spy(monkeypatch, sampling, "generate", seen, then_raise=False)
    argv = ["generate", checkpoint, "--prompt", "Ankara", "--max-new-tokens", "4", "--steps", "4", "--json"]
    assert main([*argv, "--dtype", dtype, "--device", "cpu"]) == 0
    assert seen == [("cpu", expected or torch.float32)]
    assert '"text"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, module, name",
    [
        (["eval", "{ckpt}", "--tasks", "xcopa_tr"], "diffutron.evaluation", "evaluate"),
        (["perplexity", "{ckpt}", "embedded"], "diffutron.evaluation", "text_perplexity"),
        (["serve", "{ckpt}"], "diffutron.serving", "create_app"),
        (["infill", "{ckpt}", "--text", "Ankara <mask> şehri"], "diffutron.sampling", "infill"),
    ],
)
def test_eval_perplexity_serve_and_infill_take_device_and_dtype(
    monkeypatch, checkpoint, command, module, name
):
    import importlib

    from diffutron.cli import main

    seen: list = []
    _spy(monkeypatch, importlib.import_module(module), name, seen)
    with pytest.raises(Reached):
        main([c.format(ckpt=checkpoint) for c in command] + ["--device", "cpu", "--dtype", "bf16"])
    assert seen == [("cpu", torch.bfloat16)]


def test_a_bad_dtype_on_the_command_line_names_the_flag(capsys, checkpoint):
    from diffutron.cli import main

    assert main(["generate", checkpoint, "--prompt", "x", "--dtype", "half"]) == 2
    assert "--dtype 'half': choose auto, fp32, bf16, fp16" in capsys.readouterr().err


@pytest.fixture(scope="module")
def memorised_checkpoint(memorised, tokenizer, tmp_path_factory):
    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint

    model, texts = memorised
    out = tmp_path_factory.mktemp("memorised") / "model"
    save_checkpoint(out, model, tokenizer, DiffusionSettings(mask_token_id=tokenizer.mask_token_id))
    return str(out), [" ".join(t.split()[:3]) for t in texts]


# -- --dtype auto on a CPU with bf16 units (issue 22) --------------------------------------------- ------------------------------------------------


def test_generate_with_dtype_auto_on_a_bf16_cpu_writes_the_fp32_greedy_tokens(
    monkeypatch, capsys, memorised_checkpoint
):
    """The memorised micro model (tests/test_device_dtype.py) through the command, with the dual cache:
    ``auto`` loads bf16 weights where the units are (forced here), and the greedy continuation agrees
    with fp32 on >= 90 % of the tokens (measured: all of them)."""
    import json

    from diffutron.cli import main

    path, prompts = memorised_checkpoint
    argv = [
        "generate",
        path,
        "--max-new-tokens",
        "16",
        "--steps",
        "16",
        "--block-size",
        "8",
        "--cache",
        "dual",
        "--temperature",
        "0",
        "--json",
        "--device",
        "cpu",
    ]
    for p in prompts:
        argv += ["--prompt", p]
    runs = {}
    for forced in ("none", "avx512_bf16"):
        monkeypatch.setenv(ENV_OVERRIDE, forced)
        assert main([*argv, "--dtype", "auto"]) == 0
        runs[forced] = capsys.readouterr().out
    fp32, bf16 = ([json.loads(line) for line in runs[k].splitlines() if line.startswith("{")] for k in runs)
    words = [(a["text"].split(), b["text"].split()) for a, b in zip(fp32, bf16, strict=True)]
    total = sum(len(a) for a, _ in words)
    same = sum(x == y for a, b in words for x, y in zip(a, b, strict=False))
    assert total >= 8 and same / total >= 0.9, (same, total)


# -- the loss's random draws ------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator", ["time", "count"])
def test_the_loss_draws_with_a_generator_on_the_datas_device(micro_model, tokenizer, device, estimator):
    # gpu_check built a CUDA generator for CUDA data, and the masks were drawn on the CPU: it crashed
    parts = MaskedLMParts(micro_model.to(device))
    ids = torch.randint(5, len(tokenizer), (3, 24), generator=torch.Generator().manual_seed(0)).to(device)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[0, 20:] = False
    outs = [
        mdlm_loss(
            parts,
            ids,
            maskable,
            schedule=get_schedule("linear"),
            mask_id=tokenizer.mask_token_id,
            generator=torch.Generator(device=device).manual_seed(5),
            estimator=estimator,
        )
        for _ in range(2)
    ]
    assert outs[0].masked.device == ids.device and torch.equal(outs[0].masked, outs[1].masked)
    assert outs[0].masked.any() and not (outs[0].masked & ~maskable).any()
    assert torch.isfinite(outs[0].loss)


# -- the head at a large vocabulary -----------------------------------------------------------------


def _decoder_casts(prof, weight: torch.Tensor) -> int:
    shape = list(weight.shape)
    return sum(
        1 for e in prof.events() if e.name == "aten::_to_copy" and list(e.input_shapes[0] or []) == shape
    )


def test_the_chunked_head_under_autocast_equals_the_unchunked_one_and_casts_a_frozen_decoder_once(
    micro_model, tokenizer
):
    parts = MaskedLMParts(micro_model)
    decoder = micro_model.decoder.weight  # tied to the input embedding, frozen as in a LoRA stage
    decoder.requires_grad_(False)
    vocab = micro_model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (4, 32), generator=g)
    masked = torch.rand(ids.shape, generator=g) < 0.5
    noisy = ids.masked_fill(masked, tokenizer.mask_token_id)
    targets = ids[masked]
    results = {}
    for name, limit in (("whole", 10**12), ("chunked", vocab * 7)):
        micro_model.zero_grad()
        with profile(record_shapes=True) as prof:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                ce = parts(
                    noisy,
                    None,
                    masked,
                    targets,
                    suppress_id=tokenizer.mask_token_id,
                    max_logit_elements=limit,
                )
            ce.sum().backward()
        grad = micro_model.head.dense.weight.grad.clone()
        results[name] = (ce.detach().float(), grad, _decoder_casts(prof, decoder))
    (ce_w, grad_w, casts_w), (ce_c, grad_c, casts_c) = results["whole"], results["chunked"]
    assert masked.sum() > 7 * 4  # several chunks
    assert casts_w == casts_c == 1  # not once per chunk (and again in each chunk's recomputation)
    torch.testing.assert_close(ce_c, ce_w, rtol=2e-2, atol=2e-2)
    # bf16 sums over chunks and over the whole differ elementwise by rounding: compare as vectors
    assert (grad_c - grad_w).norm() < 1e-2 * grad_w.norm(), float((grad_c - grad_w).norm() / grad_w.norm())


def test_the_elbo_of_bf16_weights_is_the_fp32_elbo_to_rounding(memorised, tokenizer):
    # the same masks (one CPU generator, one seed): only the weights' precision differs
    from diffutron.diffusion import elbo_perplexity

    model, texts = memorised
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    kw = dict(schedule=get_schedule("linear"), mask_id=tokenizer.mask_token_id, t_samples=4)
    results = [
        elbo_perplexity(MaskedLMParts(m), enc["input_ids"], attention_mask=enc["attention_mask"], **kw)
        for m in (model, copy.deepcopy(model).to(torch.bfloat16))
    ]
    fp32, bf16 = (r.nelbo_per_token for r in results)
    assert 0 < fp32 < 6 and abs(bf16 - fp32) < 0.01 * fp32, (fp32, bf16)  # measured: 4.3666 and 4.3674


def test_the_training_config_sets_the_heads_chunk_limit(tmp_path, tr_corpus, monkeypatch):
    from diffutron.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainingConfig
    from diffutron.training import loop, train

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tr_corpus), encoding="utf-8")
    seen = []
    real = loop.mdlm_loss

    def spy(*args, **kwargs):
        seen.append(kwargs.get("max_logit_elements"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "mdlm_loss", spy)
    cfg = RunConfig(
        model=ModelConfig(preset="tiny", overrides=dict(MICRO)),
        tokenizer=TokenizerConfig(vocab_size=500),
        data=DataConfig(sources=[str(corpus)], block_size=32, val_fraction=0.1),
        training=TrainingConfig(
            max_steps=1, batch_size=2, eval_every=0, save_every=0, max_logit_elements=5000
        ),
    )
    train(cfg, tmp_path / "run")
    assert seen and set(seen) == {5000}
    with pytest.raises(ValueError, match="training.max_logit_elements must be at least 1"):
        TrainingConfig(max_logit_elements=0)
