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

How the answer is masked, the difference between this task and an SFT row (issue 25):

- ``--pad-to N``: rows of N tokens, the answer followed by end-token padding as in an SFT row; the
  answer region (copy, ``[/Answer]``, padding) is then masked, and scored with ``--pad-weight``
  (1: as SFT scores it; 0: masked but not scored). Without it only the copy is masked.
- ``--t-min B``: mask each position of the answer region with probability t ~ U[B, 1) per row and
  weight 1/t, the MDLM loss of an SFT stage (``B = 0``: its full range; ``diffusion.t_clip`` [B, 1]
  in a recipe). Without it the whole region is masked.

The accuracy is always read with the whole answer region masked: the decoder's first pass.

    python benchmarks/copy_micro.py --tokenizer M --start M --pad-to 24              # masked padding
    python benchmarks/copy_micro.py --tokenizer M --start M --pad-to 24 --t-min 0    # an SFT stage
    python benchmarks/copy_micro.py --tokenizer M --start M --pad-to 24 --t-min 0.9  # clipped levels
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
    ap.add_argument("--pad-to", type=int, default=0, help="row length with end-token padding (0: none)")
    ap.add_argument("--pad-weight", type=float, default=1.0, help="loss weight of [/Answer] and padding")
    ap.add_argument(
        "--t-min", type=float, default=None, help="mask the answer at t ~ U[T_MIN, 1), weight 1/t"
    )
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
    length = max(2 * high + 6, args.pad_to)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, copied, region = [], [], []
        for _ in range(args.batch):
            k = int(torch.randint(low, high + 1, ()))
            x = torch.randint(300, len(tok) - 10, (k,)).tolist()
            prompt = [tok.bos_token_id, q, *x, eq, a]
            rows.append(prompt + x + [ea] + [tok.eos_token_id] * (length - len(prompt) - k - 1))
            copied.append([len(prompt) <= i < len(prompt) + k for i in range(length)])
            region.append([i >= len(prompt) for i in range(length)])
        copied_t = torch.tensor(copied)
        return torch.tensor(rows), copied_t, torch.tensor(region) if args.pad_to else copied_t

    for step in range(args.steps + 1):
        ids, sel, region = batch()
        weight = torch.where(sel, 1.0, args.pad_weight)
        if args.t_min is None:
            masked = region
        else:  # one level per row, systematic over the batch, as the SFT loss draws them
            u = (torch.rand(()) + torch.arange(args.batch) / args.batch) % 1
            t = (args.t_min + (1 - args.t_min) * u).clamp(min=1e-3)
            masked = region & (torch.rand(ids.shape) < t[:, None])
            weight = weight / t[:, None]
        logits = model(input_ids=ids.masked_fill(masked, tok.mask_token_id)).logits[masked]
        ce = torch.nn.functional.cross_entropy(logits, ids[masked], reduction="none")
        loss = (ce * weight[masked]).sum() / region.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():  # the decoder's first pass: the whole answer region masked
                first = model(input_ids=ids.masked_fill(region, tok.mask_token_id)).logits[sel]
            acc = (first.argmax(-1) == ids[sel]).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.3f}  copy accuracy {acc:.1%}", flush=True)


if __name__ == "__main__":
    main()
