"""Can the `tiny` ModernBERT learn to copy? The smallest form of what the quickstart's skills need.

Rows ``<bos> [Question] x1..xk [/Question] [Answer] x1..xk [/Answer] <eos>...`` with k random tokens
of the vocabulary; the answer's copy is masked and scored (cross-entropy at the masked positions, no
noise level: every copy token is masked). ``--lengths 2`` gives every row the same k, so each answer
token copies from a fixed distance; ``--lengths 1-3`` varies k, and with it the distance. Prints the
loss and the accuracy of the copied tokens every 100 steps.

    python benchmarks/copy_micro.py --tokenizer runs/q/task/model --lengths 2 --steps 400
    python benchmarks/copy_micro.py --tokenizer runs/q/task/model --lengths 1-3 --steps 800
    python benchmarks/copy_micro.py --tokenizer runs/q/task/model --start runs/q/cpt/model --lengths 2

The tokenizer must hold the chat markers as tokens (``tokenizer.chat_markers``, as the quickstart's).
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="a model folder whose tokenizer has the markers")
    ap.add_argument("--start", default=None, help="a model folder to start from (default: a fresh tiny)")
    ap.add_argument("--lengths", default="2", help="tokens per item: N or LOW-HIGH")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--local-attention", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from transformers import AutoTokenizer, ModernBertForMaskedLM

    from diffutron.models.checkpoint import load_checkpoint
    from diffutron.models.presets import preset_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    markers = [tok.convert_tokens_to_ids(t) for t in ("[Question]", "[/Question]", "[Answer]", "[/Answer]")]
    if any(m is None or m == tok.unk_token_id for m in markers):
        raise SystemExit(f"{args.tokenizer}: the tokenizer lacks the chat markers (tokenizer.chat_markers)")
    q, eq, a, ea = markers
    low, _, high = args.lengths.partition("-")
    low, high = int(low), int(high or low)
    if args.start:
        model = load_checkpoint(args.start).model
    else:
        model = ModernBertForMaskedLM(preset_config("tiny", tok, local_attention=args.local_attention))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    length = 2 * high + 6

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        rows, copied = [], []
        for _ in range(args.batch):
            k = int(torch.randint(low, high + 1, ()))
            x = torch.randint(300, len(tok) - 10, (k,)).tolist()
            prompt = [tok.bos_token_id, q, *x, eq, a]
            rows.append(prompt + x + [ea] + [tok.eos_token_id] * (length - len(prompt) - k - 1))
            copied.append([i >= len(prompt) and i < len(prompt) + k for i in range(length)])
        return torch.tensor(rows), torch.tensor(copied)

    for step in range(args.steps + 1):
        ids, sel = batch()
        noisy = ids.masked_fill(sel, tok.mask_token_id)
        logits = model(input_ids=noisy).logits[sel]
        loss = torch.nn.functional.cross_entropy(logits, ids[sel])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            acc = (logits.argmax(-1) == ids[sel]).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.3f}  copy accuracy {acc:.1%}", flush=True)


if __name__ == "__main__":
    main()
