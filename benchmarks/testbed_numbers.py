"""An exact-match testbed for decoders: Turkish numbers written out in words.

    python benchmarks/testbed_numbers.py                        # train once (cached), then every decoder
    python benchmarks/testbed_numbers.py --minutes 8 --items 200 --out runs/testbed-numbers
    python benchmarks/testbed_numbers.py --retrain              # ignore the cached model
    python benchmarks/testbed_numbers.py --mode block --block-size 8 --steps 400   # a block model against the MDLM

Generative perplexity on a barely trained model cannot tell samplers apart: such a model is never sure
of anything, so every decoder looks alike. Here the answer is checkable exactly. The task

    [Question] Sayıyı yazıyla yaz: 38.451.902 [/Question]  ->  [Answer] otuz sekiz milyon dört yüz elli bir bin dokuz yüz iki [/Answer]

is rule-governed (the words come from the `num2words` package, written apart as Turkish orthography
wants), has answers of 16-30 tokens whose length the model must decide itself (zeros write no word,
"bir" is dropped before "yüz" and "bin"), and a `tiny` model learns it on a CPU in minutes through the
project's own recipe code (one SFT stage from scratch on a tokenizer trained on the task's text).

The trained model is cached in ``--out``; every decoder is then measured on the same held-out items:
exact match (with its standard error), forward passes per answer, answer tokens per second.

``--mode block --block-size N`` trains the same recipe as a block-diffusion model (``runs/testbed-numbers-
<task>-block<N>``, the MDLM's task files) and decodes it (re-encoding and the exact block cache) in the same
run as the MDLM of ``--against`` (its reference and dual-cache decoders; trained there first when absent).

``--context N`` adds a second SFT stage, continued from the first one's model, whose questions come
after up to N tokens of unrelated Turkish text (spans of the embedded corpus, of random length), so that
the model answers the same question at the end of a long prompt: the testbed of
``benchmarks/generation_speed.py`` at 256 and 512 prompt tokens (``long_question`` builds its prompts,
with filler from another text).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from diffutron.config import recipe_from_dict
from diffutron.diffusion.block import suggested_t_clip
from diffutron.models.checkpoint import load_checkpoint
from diffutron.sampling import GenerationConfig, generate
from diffutron.sampling.prompts import encode_prompt
from diffutron.text import train_tokenizer
from diffutron.text.chat import extract_answer
from diffutron.training.pipeline import run_recipe

INSTRUCTION = "Sayıyı yazıyla yaz:"
# Number words, longest first so a greedy split of num2words' joined form is unambiguous.
_WORDS = sorted(
    "sıfır bir iki üç dört beş altı yedi sekiz dokuz on yirmi otuz kırk elli altmış yetmiş seksen "
    "doksan yüz bin milyon milyar".split(),
    key=len,
    reverse=True,
)


def number_words(n: int) -> str:
    """``n`` in Turkish words, written apart (``38451`` -> ``otuz sekiz bin dört yüz elli bir``)."""
    from num2words import num2words

    joined, words = num2words(n, lang="tr"), []
    while joined:
        word = next((w for w in _WORDS if joined.startswith(w)), None)
        if word is None:
            raise ValueError(f"cannot split {joined!r} into number words")
        words.append(word)
        joined = joined[len(word) :]
    return " ".join(words)


def digits(n: int) -> str:
    """``38451902`` -> ``38.451.902`` (the Turkish thousands separator)."""
    return f"{n:,}".replace(",", ".")


MIN_WORDS = 16  # answers of at least this many words (tokens: one per word with the task tokenizer)


def _num2words_wrong(n: int) -> bool:
    """num2words 0.5 drops the "bir" of "bir milyon" after a "milyar" when lower groups follow
    (1.001.234.567 -> "bir milyar milyon iki yüz ..."): such numbers are left out of the task."""
    return n >= 1_000_000_000 and (n // 1_000_000) % 1000 == 1


def _draw(rng: random.Random, task: str) -> int:
    if task == "easy":  # 12 digits of 2-9: every group writes "X yüz Y Z", 19 words in fixed places
        return int("".join(rng.choice("23456789") for _ in range(12)))
    return rng.randrange(10_000_000_000, 1_000_000_000_000)


def items(
    count: int, seed: int, exclude: set[int] = frozenset(), task: str = "full"
) -> list[tuple[str, str, int]]:
    """``count`` distinct (prompt text, answer, n) with answers of at least ``MIN_WORDS`` words.
    ``full``: n of 11 or 12 digits (zeros write no word, "bir" drops before "yüz" and "bin": the model
    must work out the answer's length and where each word goes; about 88 % of such numbers have 16+
    words); ``easy``: 12 digits of 2-9 (19 words, each in a fixed place)."""
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < count:
        n = _draw(rng, task)
        if n in seen or _num2words_wrong(n):
            continue
        seen.add(n)
        words = number_words(n)
        if len(words.split()) >= MIN_WORDS:
            out.append((f"{INSTRUCTION} {digits(n)}", words, n))
    return out


def write_task_files(
    folder: Path, n_train: int, n_test: int, seed: int, task: str = "full"
) -> tuple[Path, Path, list]:
    """SFT rows (alpaca jsonl), a tokenizer trained on their text, and the held-out items."""
    test = items(n_test, seed + 1, task=task)
    rows, tokenizer_dir = folder / "train.jsonl", folder / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():  # written by an earlier run: the cached model's data
        return rows, tokenizer_dir, test
    folder.mkdir(parents=True, exist_ok=True)
    train = items(n_train, seed, exclude={n for *_, n in test}, task=task)
    with rows.open("w", encoding="utf-8") as f:
        for prompt, answer, _ in train:
            f.write(json.dumps({"instruction": prompt, "output": answer}, ensure_ascii=False) + "\n")
    # A tokenizer of the task's own text, trained without the digits: every digit stays one token
    # (BPE would otherwise merge frequent pairs like "51" and blur the digit-to-word alignment) and
    # every number word becomes one token, so an answer of w words is w tokens + "\n[/Answer]".
    texts = (
        f"[Question]\n{INSTRUCTION}\n[/Question]\n\n[Answer]\n{a}\n[/Answer]" for _, a, _ in train[:20_000]
    )
    train_tokenizer(texts, vocab_size=384, model_max_length=128, show_progress=False).save_pretrained(
        tokenizer_dir
    )
    return rows, tokenizer_dir, test


def corpus_spans(tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The embedded corpus as one text and the character span of each of its tokens."""
    from diffutron.data import embedded_documents

    text = "\n".join(embedded_documents())
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return text, enc.offset_mapping


def write_context_rows(
    path: Path, tokenizer, train: list[tuple[str, str, int]], context: int, seed: int
) -> None:
    """SFT rows whose question follows a span of the embedded corpus of 0..``context`` - 48 tokens
    (uniform), one paragraph break apart: the answer depends on the last line only."""
    text, spans = corpus_spans(tokenizer)
    rng = random.Random(seed)
    longest = context - 48  # room for the chat markers, the question and <bos>
    with path.open("w", encoding="utf-8") as f:
        for prompt, answer, _ in train:
            n = rng.randint(0, longest)
            if n:
                start = rng.randrange(len(spans) - n)
                filler = text[spans[start][0] : spans[start + n - 1][1]].strip()
                prompt = f"{filler}\n\n{prompt}"
            f.write(json.dumps({"instruction": prompt, "output": answer}, ensure_ascii=False) + "\n")


def long_question(tokenizer, question: str, total: int, filler: str) -> str:
    """``question`` after as much of ``filler`` (repeated as needed) as keeps the chat prompt with
    ``<bos>`` at most ``total`` tokens; ``total`` 0 or too small for any filler: the question alone."""
    from diffutron.text.chat import format_chat

    def size(n_chars: int) -> int:
        content = f"{source[:n_chars].strip()}\n\n{question}" if n_chars else question
        chat = format_chat([{"role": "user", "content": content}], add_generation_prompt=True)
        return 1 + len(tokenizer(chat, add_special_tokens=False, verbose=False).input_ids)

    source = filler
    while len(source) < 8 * total:  # at least a character per token, with room to spare
        source += " " + filler
    lo, hi = 0, len(source)  # the most characters that fit: size() grows with n_chars
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= total else (lo, mid - 1)
    return f"{source[:lo].strip()}\n\n{question}" if lo else question


def testbed_recipe(
    rows: Path,
    tokenizer_dir: Path,
    minutes: float,
    seed: int,
    context: int = 0,
    context_minutes: float = 5.0,
    steps: int = 100_000,
    more_steps: int = 0,
    block_size: int | None = None,
    t_clip: list[float] | None | str = "suggested",
    block_noise: str = "block",
):
    """The testbed's SFT recipe; ``block_size``: every stage trains a block-diffusion model (BD3-LM,
    docs/block-diffusion.md) with blocks of that many tokens, on the clipped levels ``t_clip``
    (``"suggested"``: ``suggested_t_clip``; None: the full range, the levels a decoder meets)."""
    stages = [
        {
            "name": "numbers",
            "sft": {"sources": [{"path": str(rows)}], "max_length": 64, "val_fraction": 0.01},
            "training": {
                "max_steps": steps,
                "max_minutes": minutes,
                "batch_size": 32,
                "lr": 2e-3,
                "warmup_steps": 50,
                "eval_every": 0,
                "eval_blocks": 64,
                "save_every": 200,
                "keep_last": 1,
                "log_every": 20,
                "seed": seed,
            },
        }
    ]
    if more_steps:  # a longer budget without retraining: continue the cached model on the same rows
        stages.append(
            {
                "name": f"more{more_steps}",
                "sft": {"sources": [{"path": str(rows)}], "max_length": 64, "val_fraction": 0.01},
                "training": {
                    **stages[0]["training"],
                    "max_steps": more_steps,
                    "max_minutes": 10_000,
                    "lr": 1e-3,
                    "warmup_steps": 20,
                },
            }
        )
    if context:
        long_rows = rows.with_name(f"train-context{context}.jsonl")
        stages.append(
            {
                "name": f"context{context}",
                "sft": {
                    "sources": [{"path": str(long_rows)}],
                    "max_length": context + 32,
                    "val_fraction": 0.01,
                },
                "training": {
                    "max_steps": 100_000,
                    "max_minutes": context_minutes,
                    "batch_size": 8,
                    "lr": 1e-3,
                    "warmup_steps": 20,
                    "eval_every": 0,
                    "eval_blocks": 32,
                    "save_every": 100,
                    "keep_last": 1,
                    "log_every": 20,
                    "seed": seed,
                },
            }
        )
    if block_size is not None:
        clip = suggested_t_clip(block_size) if t_clip == "suggested" else t_clip
        diffusion = {"mode": "block", "block_size": block_size, "t_clip": clip, "block_noise": block_noise}
        stages = [{**stage, "diffusion": diffusion} for stage in stages]
    return recipe_from_dict(
        {
            "name": "testbed-numbers",
            "description": "Turkish numbers in words: an exact-match testbed for decoders.",
            "model": {"preset": "tiny"},
            "tokenizer": {"path": str(tokenizer_dir)},
            "stages": stages,
        }
    )


@dataclass
class DecoderResult:
    name: str
    exact_match: float
    stderr: float
    passes_per_answer: float
    tokens_per_second: float
    seconds: float
    correct: list[bool]


def measure(loaded, prompts: list[str], gold: list[str], cfg: GenerationConfig, batch: int, name: str):
    model, tok = loaded.model, loaded.tokenizer
    schedule = loaded.settings.make_schedule()
    passes = tokens = 0
    correct: list[bool] = []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        out = generate(model, tok, prompts[i : i + batch], cfg, schedule=schedule)
        correct += [extract_answer(t) == g for t, g in zip(out.texts, gold[i : i + batch], strict=True)]
        passes += sum(out.row_passes)
        tokens += sum(len(ids) for ids in out.token_ids)
    seconds = time.perf_counter() - t0
    em = sum(correct) / len(prompts)
    return DecoderResult(
        name=name,
        exact_match=em,
        stderr=math.sqrt(em * (1 - em) / len(prompts)),
        passes_per_answer=passes / len(prompts),
        tokens_per_second=tokens / seconds,
        seconds=seconds,
        correct=correct,
    )


def decoders(length: int, calibration: float = 1.0) -> list[tuple[str, GenerationConfig]]:
    """The reference (low-confidence, one token per pass, one block) and every knob against it.
    ``calibration``: the fitted confidence temperature (``--calibrate``) for the calibrated rows."""
    base = GenerationConfig(max_new_tokens=length, steps=length, block_size=length, temperature=0.0)
    out = [("low_confidence, 1 token/pass", base)]
    for rule in ("margin", "entropy", "random"):
        out.append((f"{rule}, 1 token/pass", replace(base, remasking=rule)))
    for div in (2, 4):
        out.append((f"low_confidence, {div} tokens/pass", replace(base, steps=length // div)))
    for div in (1, 4):
        out.append(
            (
                f"stochastic counts, {div} token(s)/pass",
                replace(base, steps=length // div, stochastic_counts=True),
            )
        )
    for block in (8, 16):
        out.append((f"low_confidence, blocks of {block}", replace(base, block_size=block)))
    out.append(("low_confidence, blocks of 8, 4 tokens/pass", replace(base, block_size=8, steps=length // 4)))
    for tau in (0.99, 0.95, 0.9, 0.8, 0.7, 0.5):
        out.append((f"threshold τ={tau}", replace(base, remasking="threshold", threshold=tau)))
    # the adaptive rules of issue 26: each a curve of exact match against passes
    for f in (0.25, 0.5, 1.0, 2.0):
        out.append((f"factor f={f}", replace(base, remasking="factor", factor=f)))
    for b in (0.05, 0.2, 0.5, 1.0):
        out.append((f"entropy_budget {b} nats", replace(base, remasking="entropy_budget", entropy_budget=b)))
    for tau in (0.98, 0.9, 0.7, 0.5):
        out.append((f"margin_threshold {tau}", replace(base, remasking="margin_threshold", threshold=tau)))
    for bar in (0.3, 0.6):  # re-masking: the fast rules with a budget of 4 revisions per answer
        out.append(
            (
                f"threshold τ=0.9, remask < {bar}",
                replace(base, remasking="threshold", threshold=0.9, remask_threshold=bar, remask_budget=4),
            )
        )
        out.append(
            (
                f"factor f=1.0, remask < {bar}",
                replace(base, remasking="factor", factor=1.0, remask_threshold=bar, remask_budget=4),
            )
        )
    if calibration != 1.0:
        cal = replace(base, confidence_temperature=calibration)
        for tau in (0.95, 0.9):
            out.append(
                (
                    f"calibrated T={calibration:.2f} threshold τ={tau}",
                    replace(cal, remasking="threshold", threshold=tau),
                )
            )
        for f in (0.5, 1.0):
            out.append(
                (f"calibrated T={calibration:.2f} factor f={f}", replace(cal, remasking="factor", factor=f))
            )
    fast = replace(base, remasking="threshold", threshold=0.9, block_size=8)
    out.append(("threshold τ=0.9, blocks of 8", fast))
    for cache in ("prefix", "dual"):
        out.append((f"low_confidence, blocks of 8, cache {cache}", replace(base, block_size=8, cache=cache)))
        out.append((f"threshold τ=0.9, blocks of 8, cache {cache}", replace(fast, cache=cache)))
    # the cache's cost at equal passes, and a refresh every k steps inside a block against it
    for k in (2, 4):
        dual = replace(base, block_size=8, cache="dual", cache_refresh=k)
        out.append((f"low_confidence, blocks of 8, cache dual, refresh {k}", dual))
    for f in (0.5, 1.0):
        blocks = replace(base, remasking="factor", factor=f, block_size=8)
        out.append((f"factor f={f}, blocks of 8", blocks))
        out.append((f"factor f={f}, blocks of 8, cache dual", replace(blocks, cache="dual")))
    return out


def block_decoders(length: int) -> list[tuple[str, GenerationConfig]]:
    """A block model's decoders (it decodes its own blocks: the generation block size is replaced by
    the model's): re-encoding the prefix against the exact block cache (``cache`` prefix), one token per
    pass and the adaptive rules."""
    base = GenerationConfig(max_new_tokens=length, steps=length, block_size=length, temperature=0.0)
    cached = replace(base, cache="prefix")
    out = [("low_confidence, 1 token/pass", base), ("low_confidence, 1 token/pass, exact cache", cached)]
    for tau in (0.9, 0.7, 0.5):
        out.append((f"threshold τ={tau}", replace(base, remasking="threshold", threshold=tau)))
        out.append((f"threshold τ={tau}, exact cache", replace(cached, remasking="threshold", threshold=tau)))
    for f in (0.5, 1.0):
        out.append((f"factor f={f}, exact cache", replace(cached, remasking="factor", factor=f)))
    return out


def mdlm_against_block(length: int) -> list[tuple[str, GenerationConfig]]:
    """The MDLM's side of the block-mode comparison: the reference, and its fastest exact-match
    decoders with the dual cache (blocks of 8, the testbed's cached setting)."""
    keep = (
        "low_confidence, 1 token/pass",
        "low_confidence, blocks of 8, cache dual",
        "threshold τ=0.9, blocks of 8, cache dual",
        "factor f=0.5, blocks of 8, cache dual",
        "factor f=1.0, blocks of 8, cache dual",
    )
    return [d for d in decoders(length) if d[0] in keep]


def fit_calibration(loaded, prompts: list[str], gold: list[str], seed: int) -> float:
    """The confidence temperature T minimising the gold tokens' negative log-likelihood at masked answer
    positions (each answer masked at a uniform random rate, as during decoding), on items held out from
    the measured ones. A grid over T: one scalar, no gradient needed."""
    model, tok = loaded.model, loaded.tokenizer
    mask_id, gen = tok.mask_token_id, torch.Generator().manual_seed(seed)
    logits_all, gold_all = [], []
    with torch.no_grad():
        for prompt, answer in zip(prompts, gold, strict=True):
            p_ids = encode_prompt(tok, prompt)  # with <bos>, as the sampler encodes it
            a_ids = tok(answer + "\n[/Answer]", add_special_tokens=False).input_ids
            ids = torch.tensor([[*p_ids, *a_ids]])
            start = len(p_ids)
            rate = torch.rand((), generator=gen)
            hide = torch.rand(len(a_ids), generator=gen) < rate
            hide[torch.randint(len(a_ids), (), generator=gen)] = True  # at least one
            ids[0, start:][hide] = mask_id
            out = model(input_ids=ids).logits[0, start:][hide].double()
            logits_all.append(out)
            gold_all.append(torch.tensor(a_ids)[hide])
    logits, target = torch.cat(logits_all), torch.cat(gold_all)
    grid = [0.5 + 0.05 * i for i in range(61)]  # 0.5 .. 3.5
    nll = [torch.nn.functional.cross_entropy(logits / t, target).item() for t in grid]
    best = grid[min(range(len(grid)), key=nll.__getitem__)]
    print(
        f"calibration: T = {best:.2f} (NLL {min(nll):.4f} vs {nll[grid.index(1.0)]:.4f} at T = 1) on {len(target)} tokens"
    )
    return best


def trained(recipe, out: Path, last: Path, retrain: bool) -> dict:
    """Train ``recipe`` into ``out`` unless its last stage is there; that stage's summary."""
    if retrain or not (last / "summary.json").exists():
        # resumes: a cached first stage is kept when only the context stage is new
        run_recipe(recipe, out, resume=not retrain, progress=True)
    summary = json.loads((last / "summary.json").read_text(encoding="utf-8"))
    print(f"model: {last / 'model'} ({summary.get('steps')} steps, {summary.get('train_seconds', 0):.0f} s)")
    return summary


def _t_clip_arg(text: str) -> list[float] | None | str:
    if text in ("suggested", "none"):
        return None if text == "none" else text
    try:
        beta, omega = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BETA,OMEGA, none or suggested, got {text!r}") from None
    return [beta, omega]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("full", "easy"), default="easy", help="see items()")
    ap.add_argument("--out", help="default: runs/testbed-numbers-<task>")
    ap.add_argument("--minutes", type=float, default=9.5, help="training budget (first run only)")
    ap.add_argument(
        "--steps",
        type=int,
        default=100_000,
        help="training step cap (first run only; equal compute under load)",
    )
    ap.add_argument(
        "--more-steps",
        type=int,
        default=0,
        help="continue the cached model this many steps more (a stage of its own, lr 1e-3): EM against budget",
    )
    ap.add_argument("--train-items", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=200, help="held-out items per decoder")
    ap.add_argument(
        "--batch", type=int, default=8, help="prompts per generate call (EM and passes do not depend on it)"
    )
    ap.add_argument("--length", type=int, default=32, help="max_new_tokens (answers take 20-23 + <eos>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--context",
        type=int,
        default=0,
        help="add a stage whose questions follow up to this many tokens of other text (0: none)",
    )
    ap.add_argument("--context-minutes", type=float, default=5.0, help="training budget of that stage")
    ap.add_argument(
        "--prompt-tokens", type=int, default=0, help="measure with filler up to this many prompt tokens"
    )
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--train-only", action="store_true", help="train (or find the cached model) and stop")
    ap.add_argument(
        "--eval-seeds",
        type=int,
        default=1,
        help="draw the held-out items this many times (other seeds, none seen in training): paired over all",
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="fit the confidence temperature on other held-out items (cached in --out) and add calibrated rows",
    )
    ap.add_argument("--only", nargs="*", help="decoders whose name contains one of these (default: all)")
    ap.add_argument(
        "--mode",
        choices=("mdlm", "block"),
        default="mdlm",
        help="block: train the recipe as a block-diffusion model (needs --block-size) and measure it "
        "against the MDLM of --against in the same run",
    )
    ap.add_argument("--block-size", type=int, help="with --mode block: tokens per block (L')")
    ap.add_argument(
        "--block-noise",
        choices=("block", "row"),
        default="block",
        help="with --mode block: a noise level per block (BD3-LM, default) or one per row",
    )
    ap.add_argument(
        "--block-t-clip",
        type=_t_clip_arg,
        default="suggested",
        help="with --mode block: training levels 'BETA,OMEGA', 'none' (the full range) or 'suggested' "
        "(default: the measured clip of docs/block-diffusion.md)",
    )
    ap.add_argument(
        "--against",
        help="with --mode block: the MDLM testbed folder (default: runs/testbed-numbers-<task>; trained "
        "there first with the same budget when absent)",
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    block = args.mode == "block"
    if block and (args.block_size is None or args.block_size < 1):
        ap.error(f"--mode block needs --block-size of at least 1, got {args.block_size}")
    if not block and (args.block_size is not None or args.against):
        ap.error("--block-size and --against go with --mode block")
    if block and (args.calibrate or args.context or args.more_steps):
        ap.error("--calibrate, --context and --more-steps are for the MDLM testbed (--mode mdlm)")
    torch.manual_seed(args.seed)

    mdlm_out = Path(args.against or f"runs/testbed-numbers-{args.task}")
    out = Path(args.out or (f"{mdlm_out}-block{args.block_size}" if block else mdlm_out))
    # a block model learns the MDLM's task files (rows, tokenizer, held-out items): one comparison
    rows, tokenizer_dir, test = write_task_files(
        mdlm_out / "task", args.train_items, args.items, args.seed, args.task
    )

    def recipe_for(block_size: int | None):
        return testbed_recipe(
            rows,
            tokenizer_dir,
            args.minutes,
            args.seed,
            args.context,
            args.context_minutes,
            args.steps,
            args.more_steps,
            block_size,
            args.block_t_clip,
            args.block_noise,
        )

    recipe = recipe_for(args.block_size)
    last = out / recipe.stages[-1].name
    if args.context and not rows.with_name(f"train-context{args.context}.jsonl").exists():
        from transformers import AutoTokenizer

        train = [json.loads(line) for line in rows.open(encoding="utf-8")]
        write_context_rows(
            rows.with_name(f"train-context{args.context}.jsonl"),
            AutoTokenizer.from_pretrained(tokenizer_dir),
            [(r["instruction"], r["output"], 0) for r in train[:20_000]],
            args.context,
            args.seed,
        )
    summary = trained(recipe, out, last, args.retrain)
    mdlm_last = mdlm_out / recipe_for(None).stages[-1].name
    if block:  # the MDLM it is measured against (cached, or trained with the same budget)
        summary = {"block": summary, "mdlm": trained(recipe_for(None), mdlm_out, mdlm_last, False)}
    if args.train_only:
        return 0

    loaded = load_checkpoint(last / "model")
    loaded.model.eval()
    tok = loaded.tokenizer
    if args.prompt_tokens:
        from turkish_sentences import SENTENCES  # filler from another text than the training spans

        test = [(long_question(tok, p, args.prompt_tokens, " ".join(SENTENCES)), a, n) for p, a, n in test]

    def chat(question: str) -> str:
        return tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )

    # more draws of held-out items: numbers seen in training (or already drawn) are left out
    seen = {int(json.loads(line)["instruction"].split()[-1].replace(".", "")) for line in rows.open()}
    seen |= {n for *_, n in test}
    for j in range(1, args.eval_seeds):
        more = items(args.items, args.seed + 1 + 1000 * j, exclude=seen, task=args.task)
        seen |= {n for *_, n in more}
        test += more
    prompts = [chat(p) for p, _, _ in test]
    gold = [a for _, a, _ in test]
    lengths = [len(tok(a + "\n[/Answer]", add_special_tokens=False).input_ids) for a in gold]
    print(
        f"held-out items: {len(test)} ({args.eval_seeds} draw(s) of {args.items}), "
        f"answer tokens (with [/Answer]): {min(lengths)}-{max(lengths)}"
    )
    calibration = 1.0
    if args.calibrate:
        cal_file = out / "calibration.json"
        if cal_file.exists():
            calibration = json.loads(cal_file.read_text())["confidence_temperature"]
            print(f"calibration (cached): T = {calibration:.2f}")
        else:
            held = items(200, args.seed + 777, exclude=seen, task=args.task)
            calibration = fit_calibration(loaded, [chat(p) for p, _, _ in held], [a for _, a, _ in held], 0)
            cal_file.write_text(json.dumps({"confidence_temperature": calibration, "items": 200}))

    # (model, decoders); block mode: the MDLM first (its one token per pass is the reference), then
    # the block model, on the same items in the same process
    if block:
        mdlm = load_checkpoint(mdlm_last / "model")
        mdlm.model.eval()
        plan = [(mdlm, "MDLM", mdlm_against_block(args.length))]
        plan.append((loaded, f"BD3-LM L'={args.block_size}", block_decoders(args.length)))
    else:
        plan = [(loaded, "", decoders(args.length, calibration))]
    chosen = [(m, f"{label}: {name}" if label else name, cfg) for m, label, ds in plan for name, cfg in ds]
    if args.only:  # the reference stays first: the comparisons are against it
        chosen = chosen[:1] + [d for d in chosen[1:] if any(k in d[1] for k in args.only)]
    results = []
    for model, name, cfg in chosen:
        r = measure(model, prompts, gold, cfg, args.batch, name)
        results.append(r)
        # per draw of items: the spread of exact match between the draws
        per = [
            100 * sum(r.correct[j * args.items : (j + 1) * args.items]) / args.items
            for j in range(args.eval_seeds)
        ]
        print(
            f"{name:<52} EM {100 * r.exact_match:5.1f} ± {100 * r.stderr:3.1f} "
            f"(draws {' / '.join(f'{e:.1f}' for e in per)})  "
            f"passes {r.passes_per_answer:5.1f}  {r.tokens_per_second:7.1f} tok/s",
            flush=True,
        )
    ref = results[0]
    print(f"\nagainst '{ref.name}': passes and tokens/s ratios")
    for r in results[1:]:
        gained = sum(c and not c0 for c, c0 in zip(r.correct, ref.correct, strict=True))
        lost = sum(c0 and not c for c, c0 in zip(r.correct, ref.correct, strict=True))
        print(
            f"{r.name:<52} EM {100 * (r.exact_match - ref.exact_match):+5.1f} pt (+{gained} -{lost} items)  "
            f"passes ×{r.passes_per_answer / ref.passes_per_answer:.2f}  "
            f"tok/s ×{r.tokens_per_second / ref.tokens_per_second if ref.tokens_per_second else math.nan:.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"train": summary, "results": [asdict(r) for r in results]}, indent=2, ensure_ascii=False
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
