"""Quality of generated samples, for comparing samplers: generative perplexity and unigram entropy.

    ppl = generative_perplexity(texts, "ytu-ce-cosmos/turkish-gpt2")   # or (model, tokenizer)
    ppl["perplexity"]
    unigram_entropy(out.token_ids)                                      # mean per sample, in nats

Generative perplexity (MDLM, ReMDM, ...) scores samples with a separate autoregressive reference
model: lower means more fluent *according to that model*. It rewards repetition, so report it with
the unigram entropy of each sample (a degenerate "ve ve ve ..." sample has low perplexity and low
entropy). Each text is scored on its own, after the reference tokenizer's ``<bos>`` when it has one
(otherwise the first token is context only), truncated to the reference model's context.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
    """Mean over samples of the entropy (nats) of the sample's own token frequency distribution."""
    values = []
    for ids in samples:
        if not ids:
            continue
        counts = Counter(ids)
        n = len(ids)
        values.append(-sum(c / n * math.log(c / n) for c in counts.values()))
    return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def generative_perplexity(
    texts: Sequence[str],
    reference,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Perplexity of ``texts`` under an autoregressive ``reference`` (hub id, folder, or
    ``(model, tokenizer)``), pooled over all scored tokens."""
    if isinstance(reference, (tuple, list)):
        model, tokenizer = reference
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(reference)
        model = AutoModelForCausalLM.from_pretrained(reference)
    if device is not None:
        model.to(device)
    model.eval()
    dev = next(model.parameters()).device
    limit = (
        max_length
        or getattr(model.config, "n_positions", None)
        or getattr(model.config, "max_position_embeddings", 1024)
    )
    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    seqs = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if bos is not None:
            ids = [bos, *ids]
        if len(ids) >= 2:
            seqs.append(ids[:limit])
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
            attention[i, : len(s)] = 1
        ids, attention = ids.to(dev), attention.to(dev)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        targets = ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((targets != -100).sum())
    if total_tokens == 0:
        raise ValueError("no tokens to score (every text was empty)")
    per_token = total_nll / total_tokens
    return {
        "perplexity": math.exp(per_token),
        "nll_per_token": per_token,
        "tokens": total_tokens,
        "texts": len(seqs),
    }
