"""ELBO of the same text with and without ``<bos>`` in front, for one or more checkpoints.

    python benchmarks/bos_prefix.py runs/quickstart/model [other/model ...] --docs 48 --length 127

The first ``--length`` tokens of ``--docs`` documents of the embedded corpus (the last ones: the
quickstart holds out a random 2 % of blocks, so these are mostly, not strictly, unseen) are scored
twice by the validation ELBO code (``diffusion.elbo_perplexity``, same seed, same text tokens
maskable): as ``text`` and as ``<bos> text``. A model packed without ``<bos>`` never saw the prefix;
one packed with it (``text.bos``) saw it at every document start. Prints NELBO per text token.
"""

from __future__ import annotations

import argparse

import torch

from diffutron.data import DataReport, iter_documents
from diffutron.diffusion import elbo_perplexity
from diffutron.models.checkpoint import load_checkpoint
from diffutron.models.heads import MaskedLMParts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--docs", type=int, default=48)
    p.add_argument("--length", type=int, default=127)
    p.add_argument("--t-samples", type=int, default=8)
    args = p.parse_args()
    docs = list(iter_documents("embedded", DataReport()))[-4 * args.docs :]
    print("| model | NELBO/token, text | NELBO/token, <bos> text | difference |")
    print("|---|---:|---:|---:|")
    for path in args.models:
        loaded = load_checkpoint(path)
        tok = loaded.tokenizer
        rows = [tok(d, add_special_tokens=False)["input_ids"][: args.length] for d in docs]
        rows = [r for r in rows if len(r) == args.length][: args.docs]
        plain = torch.tensor(rows)
        framed = torch.cat([torch.full((len(rows), 1), tok.bos_token_id), plain], dim=1)
        maskable = torch.ones_like(framed, dtype=torch.bool)
        maskable[:, 0] = False  # the same text tokens are scored in both
        kw = dict(schedule=loaded.settings.make_schedule(), mask_id=loaded.mask_id, t_samples=args.t_samples)
        parts = MaskedLMParts(loaded.model)
        a = elbo_perplexity(parts, plain, **kw)
        b = elbo_perplexity(parts, framed, maskable=maskable, **kw)
        print(
            f"| {path} ({len(rows)} x {args.length} tokens) | {a.nelbo_per_token:.4f} ± {a.stderr_nelbo:.4f} "
            f"| {b.nelbo_per_token:.4f} ± {b.stderr_nelbo:.4f} | {b.nelbo_per_token - a.nelbo_per_token:+.4f} |"
        )


if __name__ == "__main__":
    main()
