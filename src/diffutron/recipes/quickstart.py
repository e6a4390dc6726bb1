"""The quickstart: a masked diffusion model from nothing, offline, on a CPU, in minutes.

    diffutron quickstart --minutes 5 --out runs/quickstart
    diffutron quickstart --full --out runs/quickstart-full      # the whole progression, ~11 minutes
    diffutron quickstart --language et                          # Estonian (docs/languages.md)

Turkish by default; ``--language`` picks another language pack (:mod:`diffutron.languages`): its
corpus, prompts and built-in instruction sets. A pack with a held-out corpus (Estonian: the issues
of 2005) also gets the ELBO perplexity of those unseen documents, before and after training.

1. trains a byte-level BPE tokenizer on the embedded corpus (Atatürk's speeches, public domain);
2. packs the corpus into 128-token blocks, holds out 2% for validation;
3. trains the ``tiny`` ModernBERT (~5M parameters) with the MDLM loss for the time budget;
4. reports the validation ELBO perplexity (start and end) and generates continuations of fixed prompts;
5. writes model/, metrics.jsonl, loss.png, summary.json under --out.

``--full`` runs the shipped recipe ``quickstart-tr`` instead (the same recipe, built here; a test keeps
the two equal): pre-training as above, then stage-1 general instruction
tuning (three checkable skills of data/skills.py: count the words, odd or even, how many digits; and
sentence continuation from the embedded corpus, plus chatterbot-corpus's Turkish conversations when that
package is installed), then stage-2 task-specific tuning (``rakam``: a number written in Turkish words
-> its digits, with the conversations, replaying 30 % of stage 1's data), and ends with the per-stage
skill table (summary.json "skills"), one held-out question of each skill ("demo") and a few chat
prompts. Other languages keep continuation/fill-blank.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    RecipeConfig,
    RunConfig,
    TokenizerConfig,
    TrainingConfig,
    recipe_from_dict,
)
from ..data.sources import embedded_corpus
from ..diffusion.block import suggested_t_clip
from ..evaluation.perplexity import text_perplexity
from ..io import atomic_write_json
from ..languages import DEFAULT_LANGUAGE, get_language
from ..models.checkpoint import load_checkpoint
from ..sampling import GenerationConfig, generate
from ..text.chat import extract_answer
from ..training import latest_checkpoint, train
from ..training.pipeline import run_recipe
from ..training.prepare import build_model

PROMPTS = list(get_language("tr").prompts)  # Turkish; other languages: their pack's prompts

# A narrow window in the sliding-attention layers (ModernBERT's own local attention: +-4 tokens instead of
# the whole 128-token block): a bidirectional model sees its neighbours only through attention, and a
# near-uniform attention over 9 tokens already carries them, so it leaves the unigram plateau sooner.
# Measured in docs/benchmarks.md ("Quality at a fixed budget"); the shipped YAMLs say the same.
TINY_OVERRIDES = {"local_attention": 8}
# A quarter of the run as warmup (30 steps before): -0.04 nats/token at 400 steps over 3 seeds, every
# seed better (docs/benchmarks.md); a share, not a count, so that a short --minutes still reaches the peak.
WARMUP_RATIO = 0.25


def quickstart_config(
    minutes: float,
    seed: int = 0,
    language: str = DEFAULT_LANGUAGE,
    mode: str = "mdlm",
    block_size: int = 16,
) -> RunConfig:
    """The quickstart's run, sized to ``minutes`` of training. ``mode="block"``: block diffusion with
    blocks of ``block_size`` tokens (docs/block-diffusion.md)."""
    return RunConfig(
        language=language,
        model=ModelConfig(preset="tiny", overrides=dict(TINY_OVERRIDES)),
        diffusion=DiffusionConfig(
            mode=mode,
            block_size=block_size if mode == "block" else None,
            t_clip=suggested_t_clip(block_size) if mode == "block" else None,  # measured per block size
        ),
        tokenizer=TokenizerConfig(vocab_size=8000),
        data=DataConfig(sources=["embedded"], block_size=128, val_fraction=0.02),
        training=TrainingConfig(
            max_steps=100_000,
            max_minutes=minutes,
            batch_size=16,
            lr=1e-3,
            warmup_ratio=WARMUP_RATIO,
            eval_every=100,
            eval_blocks=48,
            eval_t_samples=4,
            save_every=100,
            keep_last=1,
            log_every=5,
            seed=seed,
        ),
    )


def sample_config(tokenizer, seed: int = 0) -> GenerationConfig:
    """How the quickstart (and benchmarks comparing with it) continue ``PROMPTS``: 32 tokens each.

    Sampled (seeded, so reproducible) rather than greedy: a few minutes of training leave a model
    whose greedy, most-confident choices collapse onto frequent words ("Bu Bu."); nucleus sampling
    shows what it has actually learned of the corpus' words and morphology. The end token is
    suppressed: these are continuations of a running text."""
    return GenerationConfig(
        max_new_tokens=32,
        steps=32,
        block_size=16,
        temperature=0.9,
        top_p=0.9,
        repetition_penalty=1.2,
        seed=seed,
        suppress_tokens=(tokenizer.eos_token_id,),
    )


HELDOUT_CHARS = 60_000  # the held-out ELBO reads whole documents until this many characters
HELDOUT_T_SAMPLES = 4


def heldout_texts(language: str, max_chars: int = HELDOUT_CHARS) -> list[str]:
    """The first documents of the pack's held-out corpus, whole, up to ``max_chars`` characters."""
    texts: list[str] = []
    for doc in embedded_corpus(get_language(language).heldout):
        texts.append(doc)
        if sum(map(len, texts)) >= max_chars:
            break
    return texts


def heldout_perplexity(model, tokenizer, settings, texts: list[str]) -> dict:
    """ELBO perplexity of whole held-out documents (windows of the training length)."""
    r = text_perplexity(
        model,
        tokenizer,
        texts,
        mask_id=int(settings.mask_token_id),
        schedule=settings.make_schedule(),
        t_samples=HELDOUT_T_SAMPLES,
        context_length=settings.context_length,
    )
    return {"perplexity": r.perplexity, "bits_per_char": r.bits_per_char, "windows": r.windows}


def run_quickstart(
    out_dir: str | Path = "runs/quickstart",
    minutes: float = 5.0,
    seed: int = 0,
    progress: bool = True,
    language: str = DEFAULT_LANGUAGE,
    max_steps: int | None = None,
    mode: str = "mdlm",
    block_size: int = 16,
) -> dict:
    """Train, sample and (for a pack with a held-out corpus) score unseen documents; ``max_steps``
    stops the run after that many steps even if time is left (comparisons on a loaded machine)."""
    pack = get_language(language)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    # Running it again continues (or just re-reports) the run in out_dir instead of refusing it.
    resume = latest_checkpoint(out_dir / "checkpoints") is not None
    cfg = quickstart_config(minutes, seed, language, mode, block_size)
    result = train(cfg, out_dir, resume=resume, max_steps=max_steps, progress=progress)
    loaded = load_checkpoint(result.model_dir)
    prompts = list(pack.prompts)
    gen = sample_config(loaded.tokenizer, seed)
    out = generate(loaded.model, loaded.tokenizer, prompts, gen, schedule=loaded.settings.make_schedule())
    samples = [{"prompt": p, "completion": c} for p, c in zip(prompts, out.texts, strict=True)]
    summary = {
        **result.summary,
        "samples": samples,
        "sampling": gen.__dict__,
        "sampling_forward_passes": out.forward_passes,
        "wall_seconds": time.perf_counter() - t0,
        "model_dir": str(result.model_dir),
    }
    if pack.heldout is not None:
        texts = heldout_texts(language)
        # "before": a fresh model of the same shape and seed, as the run started from
        torch.manual_seed(seed)
        fresh = build_model(cfg.model, loaded.tokenizer).eval()
        summary["language"] = language
        summary["heldout"] = {
            "corpus": pack.heldout,
            "documents": len(texts),
            "characters": sum(map(len, texts)),
            "before": heldout_perplexity(fresh, loaded.tokenizer, loaded.settings, texts),
            "after": heldout_perplexity(loaded.model, loaded.tokenizer, loaded.settings, texts),
        }
        summary["corpus_note"] = pack.corpus_note
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# quickstart --full: the progression CPT -> general SFT -> task SFT (shipped/recipes/quickstart-tr.yaml)
# ---------------------------------------------------------------------------------------------

FULL_MINUTES = 9.0  # training minutes of the three stages together; data, evaluation and sampling add ~1.5
# The task stage gets the most after pre-training: its skill is still rising when the stage ends.
_STAGE_SHARE = {"cpt": 0.36, "general": 0.27, "task": 0.37}
_SFT_TRAINING = dict(
    max_steps=100_000, batch_size=16, lr=1.0e-3, warmup_steps=10, eval_every=0, eval_blocks=64
)


# SFT rows are fixed-length: with the compact template every skill row fits 32 tokens (26 at most for
# `rakam`, 31 for the copy skills' two upper-case words); a step costs ~2/3 of a 48-token one, and on a
# slow CPU the 48-token stages were too short for `tek` and `rakam` (docs/benchmarks.md). Continuation
# rows do not fit and are dropped (counted in data_report.txt): the general stage is the skills.
SFT_LENGTH = 32
# Share of the task stage replaying the general stage's data (against forgetting; docs/benchmarks.md).
REPLAY = 0.3
# The task stage's noise levels: most of the answer masked. Reading the digits of a number out of the
# question is not learned over the full range; t in [0.7, 1) learned it further on average than [0.9, 1)
# (71 % against 59 % over six paired arms, inside a wide seed spread: docs/benchmarks.md "A digit is one
# token wherever it stands"); the general stage keeps the full range (`say` learns there, clipped slower).
TASK_T_CLIP = [0.7, 1.0]
# In block mode nearly whole blocks, as measured on the number-words testbed (docs/block-diffusion.md).
BLOCK_TASK_T_CLIP = [0.9, 1.0]


def chat_prompts(language: str = DEFAULT_LANGUAGE) -> list[list[dict[str, str]]]:
    """The pack's chat prompts as one-message conversations."""
    return [[{"role": "user", "content": c}] for c in get_language(language).chat_prompts]


CHAT_PROMPTS = chat_prompts("tr")

# Built-in conversation sets by language (chatterbot-corpus has Turkish, not Estonian).
_CONVERSATIONS = {"tr": "chatterbot"}


def quickstart_recipe(
    minutes: float = FULL_MINUTES,
    seed: int = 0,
    language: str = DEFAULT_LANGUAGE,
    mode: str = "mdlm",
    block_size: int = 16,
) -> RecipeConfig:
    """The ``quickstart-<language>`` recipe; ``minutes`` is split 36/27/37 over the three stages.
    ``mode="block"``: every stage trains block diffusion with blocks of ``block_size`` (the SFT stages
    with the prompt clean and the answer cut into blocks; docs/block-diffusion.md)."""
    pack = get_language(language)
    diffusion: dict = {"schedule": "linear", "normalization": "token"}
    if mode != "mdlm":
        diffusion.update(mode=mode, block_size=block_size, t_clip=suggested_t_clip(block_size))

    task_clip = TASK_T_CLIP if mode == "mdlm" else BLOCK_TASK_T_CLIP

    def budget(stage: str) -> float:
        return round(minutes * _STAGE_SHARE[stage], 3)

    # chatterbot: 146 rows, repeated to count
    conversations = _CONVERSATIONS.get(language)
    chat = [{"builtin": conversations, "weight": 4.0, "optional": True}] if conversations else []
    # the checkable skills (data/skills.py) are Turkish: another language keeps its own sets
    turkish = language == "tr"
    # the skills copy words of the question: the compact template with the markers as tokens puts a
    # question's last word 2 tokens from the answer, spelled the same in both (text/chat.py)
    template = "compact" if turkish else "diffutron"
    if turkish:
        general = [{"builtin": "skills-general"}, {"builtin": "continuation", "max_rows": 3000}]
        task, length, replay = [{"builtin": "skill-rakam"}], SFT_LENGTH, REPLAY
    else:
        general = [{"builtin": "continuation", "max_rows": 6000}]
        task, length, replay = [{"builtin": "fill-blank", "max_rows": 6000}], 128, 0.0
    return recipe_from_dict(
        {
            "name": f"quickstart-{language}" + ("" if mode == "mdlm" else f"-block{block_size}"),
            "description": f"A tiny {pack.name} MDLM from nothing, offline on a CPU: pre-training, then "
            "general and task-specific instruction tuning on data derived at run time.",
            "language": language,
            "model": {"preset": "tiny", "overrides": dict(TINY_OVERRIDES)},
            "tokenizer": {"vocab_size": 8000, "chat_markers": turkish},
            "defaults": {
                "diffusion": diffusion,
                "training": {
                    "seed": seed,
                    "log_every": 5,
                    "save_every": 50,
                    "keep_last": 1,
                    "eval_t_samples": 4,
                },
            },
            "stages": [
                {
                    "name": "cpt",
                    "data": {"sources": ["embedded"], "block_size": 128, "val_fraction": 0.02},
                    "training": {
                        "max_steps": 100_000,
                        "max_minutes": budget("cpt"),
                        "batch_size": 16,
                        "lr": 1.0e-3,
                        "warmup_ratio": WARMUP_RATIO,
                        "eval_every": 100,
                        "eval_blocks": 48,
                    },
                },
                {
                    "name": "general",
                    "sft": {
                        "sources": [*general, *chat],
                        "max_length": length,
                        "val_fraction": 0.05,
                        "chat_template": template,
                    },
                    "training": {**_SFT_TRAINING, "max_minutes": budget("general")},
                },
                {
                    "name": "task",
                    "sft": {
                        "sources": [*task, *chat],
                        "max_length": length,
                        "val_fraction": 0.05,
                        "chat_template": template,
                        "replay": replay,
                    },
                    **({"diffusion": {"t_clip": task_clip}} if turkish else {}),
                    "training": {**_SFT_TRAINING, "max_minutes": budget("task")},
                },
            ],
        }
    )


def skill_demo(loaded, names: list[str]) -> list[dict[str, str]]:
    """One held-out question of each skill, and the final model's answer (the skill decode). Each
    question's right answer differs from the others' (two skills may both answer ``4``), so that two
    equal answers always mean that one of them is wrong."""
    from ..data.skills import heldout
    from ..evaluation.skills import answer

    rows: list[dict] = []
    for name in names:
        candidates = heldout(name, 20)
        taken = {r["output"] for r in rows}
        rows.append(next((r for r in candidates if r["output"] not in taken), candidates[0]))
    answers = answer(loaded.model, loaded.tokenizer, rows, loaded.settings.make_schedule()) if rows else []
    return [
        {
            "skill": name,
            "prompt": r["instruction"],
            "answer": a,
            "reference": r["output"],
        }
        for name, r, a in zip(names, rows, answers, strict=True)
    ]


def run_quickstart_full(
    out_dir: str | Path = "runs/quickstart-full",
    minutes: float = FULL_MINUTES,
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
    language: str = DEFAULT_LANGUAGE,
    mode: str = "mdlm",
    block_size: int = 16,
) -> dict:
    """Run the three stages (resuming whatever an earlier call left), then chat with the final model.
    ``mode``/``block_size``: as ``quickstart_recipe`` (a block model chats block by block)."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    messages = chat_prompts(language)
    recipe = quickstart_recipe(minutes, seed, language, mode, block_size)
    result = run_recipe(recipe, out_dir, resume=resume, progress=progress)
    loaded = load_checkpoint(result.final_model)
    gen = GenerationConfig(
        max_new_tokens=32, steps=32, block_size=16, temperature=0.0, repetition_penalty=1.2
    )
    # the template travelled with the tokenizer: exactly what a chat client will send
    prompts = [
        loaded.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages
    ]
    out = generate(loaded.model, loaded.tokenizer, prompts, gen, schedule=loaded.settings.make_schedule())
    chats = [
        {"user": m[-1]["content"], "answer": extract_answer(text)}
        for m, text in zip(messages, out.texts, strict=True)
    ]
    summary = {
        "stages": result.stages,
        "skills": result.skills,
        "demo": skill_demo(loaded, list(result.skills)),
        "chats": chats,
        "sampling": gen.__dict__,
        "wall_seconds": time.perf_counter() - t0,
        "model_dir": str(result.final_model),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
