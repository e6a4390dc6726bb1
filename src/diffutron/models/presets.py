"""Model presets: ``ModernBertConfig`` shapes from a CPU toy up to the published mmBERT-base backbone.

    config = preset_config("tiny", tokenizer)          # vocab and special ids from the tokenizer
    model = ModernBertForMaskedLM(config)

| preset       | hidden | layers | heads | MLP  | params (16k vocab)  | use                        |
|--------------|--------|--------|-------|------|---------------------|----------------------------|
| tiny         | 256    | 4      | 4     | 512  | ~6.8M               | this CPU, tests, quickstart|
| small        | 512    | 8      | 8     | 768  | ~26M                | a laptop, quick experiments|
| mmbert-base  | 768    | 22     | 12    | 1152 | 307M (256k vocab)   | the Diffutron backbone     |

Every third layer (0, 3, ...) attends globally, the others in a +-64 token window, as in ModernBERT.
"""

from __future__ import annotations

from typing import Any

from transformers import ModernBertConfig

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=1024,
        local_attention=128,
    ),
    "small": dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        intermediate_size=768,
        max_position_embeddings=1024,
        local_attention=128,
    ),
    # The published backbone (jhu-clsp/mmBERT-base): Gemma-2 vocabulary of 256k tokens, RoPE theta
    # 160k in both global and local layers.
    "mmbert-base": dict(
        hidden_size=768,
        num_hidden_layers=22,
        num_attention_heads=12,
        intermediate_size=1152,
        max_position_embeddings=8192,
        local_attention=128,
        vocab_size=256000,
        rope_theta=160000.0,
    ),
}


def preset_config(name: str, tokenizer=None, **overrides: Any) -> ModernBertConfig:
    """A ModernBertConfig for preset ``name``; vocabulary size and special ids come from ``tokenizer``
    when given (a tokenizer is what decides the vocabulary), then ``overrides`` win."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    kw = dict(PRESETS[name])
    theta = kw.pop("rope_theta", None)
    if theta is not None:
        kw["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": theta},
        }
    if tokenizer is not None:
        kw.update(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            cls_token_id=tokenizer.cls_token_id
            if tokenizer.cls_token_id is not None
            else tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id
            if tokenizer.sep_token_id is not None
            else tokenizer.eos_token_id,
        )
    else:
        # mmBERT / Gemma ids; also the ids of the tokenizers this project trains.
        kw.setdefault("vocab_size", 16000)
        kw.update(pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1)
    kw.update(overrides)
    if "layer_types" not in overrides:
        layers = kw["num_hidden_layers"]
        kw["layer_types"] = ["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(layers)]
    return ModernBertConfig(**kw)
