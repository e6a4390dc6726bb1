import json

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from diffutron.config import LoraConfig
from diffutron.models import (
    DiffusionSettings,
    MaskedLMParts,
    apply_lora,
    load_checkpoint,
    merge_lora,
    preset_config,
    save_checkpoint,
    trainable_share,
)
from diffutron.models.presets import PRESETS


def _n_params(config) -> int:
    from transformers import ModernBertForMaskedLM

    with torch.device("meta"):
        return sum(p.numel() for p in ModernBertForMaskedLM(config).parameters())


def test_presets_have_the_documented_sizes():
    assert 6.0e6 < _n_params(preset_config("tiny", vocab_size=16000)) < 7.5e6
    assert 20e6 < _n_params(preset_config("small", vocab_size=16000)) < 30e6
    base = preset_config("mmbert-base")
    assert 300e6 < _n_params(base) < 315e6  # 307M published
    assert base.layer_types[0] == "full_attention" and base.layer_types[1] == "sliding_attention"
    assert base.layer_types.count("full_attention") == 8  # layers 0, 3, ..., 21
    assert set(PRESETS) == {"tiny", "small", "mmbert-base"}


def test_preset_takes_vocabulary_and_special_ids_from_the_tokenizer(tokenizer):
    cfg = preset_config("tiny", tokenizer)
    assert cfg.vocab_size == len(tokenizer)
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id) == (0, 1, 2)


def test_checkpoint_round_trip_loads_with_auto_classes_and_keeps_outputs(tmp_path, micro_model, tokenizer):
    settings = DiffusionSettings(schedule={"name": "cosine"}, mask_token_id=tokenizer.mask_token_id)
    save_checkpoint(tmp_path / "m", micro_model, tokenizer, settings)
    assert (tmp_path / "m" / "model.safetensors").exists()
    ids = torch.randint(5, len(tokenizer), (2, 12))
    micro_model.eval()
    want = micro_model(input_ids=ids).logits
    auto = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(auto(input_ids=ids).logits, want)
    assert AutoTokenizer.from_pretrained(tmp_path / "m").mask_token == "<mask>"
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.settings.make_schedule().name == "cosine" and loaded.mask_id == tokenizer.mask_token_id
    torch.testing.assert_close(loaded.model(input_ids=ids).logits, want)


def test_a_plain_bert_without_mask_token_gets_one_and_default_settings(tmp_path, tokenizer):
    from transformers import PreTrainedTokenizerFast

    # A BERT masked LM whose tokenizer lacks a mask token: loading adds it and resizes the embeddings.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    tok.save_pretrained(tmp_path / "bert")
    base = len(tok)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=base, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    )
    model.save_pretrained(tmp_path / "bert")
    loaded = load_checkpoint(tmp_path / "bert")
    assert loaded.tokenizer.mask_token is not None
    assert loaded.model.get_input_embeddings().weight.shape[0] >= len(loaded.tokenizer)
    assert loaded.settings.make_schedule().name == "linear"
    parts = MaskedLMParts(loaded.model)
    assert parts.sparse_head  # BERT is split into encoder + head too
    ids = torch.randint(5, 100, (1, 8))
    torch.testing.assert_close(parts.logits(ids), loaded.model(input_ids=ids).logits)


def test_tokenizer_from_another_model_is_a_clear_error(tmp_path, micro_model, tokenizer, tr_corpus):
    from diffutron.text.tokenizer import train_tokenizer

    save_checkpoint(tmp_path / "m", micro_model, tokenizer, DiffusionSettings(mask_token_id=4))
    bigger = train_tokenizer(tr_corpus, vocab_size=2 * len(tokenizer), min_frequency=1)
    if len(bigger) <= len(tokenizer):
        pytest.skip("could not build a larger tokenizer")
    bigger.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="different models"):
        load_checkpoint(tmp_path / "m")


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path / "empty")


def test_lora_targets_the_four_block_linears_and_merge_keeps_outputs(micro_model):
    ids = torch.randint(5, 500, (2, 16))
    lora = apply_lora(micro_model, LoraConfig(r=4, alpha=8))
    names = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("Wqkv" in n for n in names) and any("attn.Wo" in n for n in names)
    assert any("mlp.Wi" in n for n in names) and any("mlp.Wo" in n for n in names)
    assert not any("head" in n or "embeddings" in n or "decoder" in n for n in names)
    # make the adapters non-trivial, then merging must not change the function
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    lora.eval()
    before = lora(input_ids=ids).logits
    merged = merge_lora(lora)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids=ids).logits, before, rtol=1e-4, atol=1e-5)


def test_trainable_share_of_the_published_cpt_setting_is_about_15_percent():
    from transformers import ModernBertForMaskedLM

    with torch.device("meta"):
        model = ModernBertForMaskedLM(preset_config("mmbert-base"))
        model = apply_lora(model, LoraConfig(r=256, alpha=256))
    _, _, share = trainable_share(model)
    assert share == pytest.approx(0.1494, abs=0.002)


def test_settings_file_from_a_newer_version_loads_with_unknown_keys_ignored(tmp_path, micro_model, tokenizer):
    save_checkpoint(tmp_path / "m", micro_model, tokenizer, DiffusionSettings(mask_token_id=4))
    path = tmp_path / "m" / "diffusion_config.json"
    data = json.loads(path.read_text())
    data["future_field"] = 1
    path.write_text(json.dumps(data))
    assert load_checkpoint(tmp_path / "m").settings.mask_token_id == 4


def test_loading_a_checkpoint_hides_the_weight_loading_bar_unless_verbose(
    tmp_path, micro_model, tokenizer, capfd
):
    import logging

    save_checkpoint(tmp_path / "m", micro_model, tokenizer, DiffusionSettings(mask_token_id=4))
    capfd.readouterr()
    load_checkpoint(tmp_path / "m")
    assert "Loading weights" not in capfd.readouterr().err
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # what `diffutron -v` sets
    try:
        load_checkpoint(tmp_path / "m")
    finally:
        root.setLevel(level)
    assert "Loading weights" in capfd.readouterr().err


def test_the_head_owns_its_cross_entropy_and_lora_settings_live_in_one_place():
    """No import circle (models.heads never imports diffusion), and LoRA settings are config.LoraConfig."""
    import ast
    import inspect

    import diffutron.models.heads as heads
    import diffutron.models.lora as lora
    from diffutron.diffusion import head_cross_entropy

    imports = [
        n.module or "" for n in ast.walk(ast.parse(inspect.getsource(heads))) if isinstance(n, ast.ImportFrom)
    ]
    assert not [m for m in imports if "diffusion" in m]
    assert head_cross_entropy is heads.head_cross_entropy
    assert not hasattr(lora, "LoraSettings") and inspect.signature(lora.apply_lora).parameters[
        "settings"
    ].annotation in (LoraConfig, "LoraConfig")
