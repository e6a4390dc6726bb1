"""``diffutron generate``, ``infill``, ``chat`` and ``denoise-plot``: thin wrappers over diffutron.sampling.

    diffutron generate MODEL --prompt "Türkiye'nin başkenti" --preset fast --json
    diffutron generate MODEL --prompts-file prompts.txt --batch-size 16 --json > out.jsonl
    diffutron infill MODEL --text "Ankara Türkiye'nin <mask> şehridir." --span 2
    diffutron chat MODEL [--no-live]                     # reads one user turn per line from stdin
    diffutron denoise-plot MODEL --prompt TEXT --out steps.png

Decoding flags are built from ``GenerationConfig``'s fields (documented there once); each flag left out
keeps the value of ``--preset`` (default: diffutron, the published setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from . import add_device_flags
from .lazy import defer

SKIP_FOR_INFILL = {"max_new_tokens", "stop", "stop_at_eos"}


def _add_config_flags(p: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    defer(p, lambda: _add_config_flags_now(p, skip))  # they import torch: only when the command is used


def _add_config_flags_now(p: argparse.ArgumentParser, skip: set[str]) -> None:
    from ..sampling import PRESETS, GenerationConfig

    g = p.add_argument_group("decoding (defaults: the --preset)")
    g.add_argument(
        "--preset", default="diffutron", choices=sorted(PRESETS), help="starting values (default diffutron)"
    )
    for f in dataclasses.fields(GenerationConfig):
        if f.name in skip:
            continue
        flag, meta = "--" + f.name.replace("_", "-"), dict(f.metadata)
        help_text = meta.pop("help", "")
        if isinstance(f.default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(f.default, tuple):  # repeatable: --stop TEXT, --suppress-tokens ID_OR_TOKEN
            g.add_argument(flag, action="append", default=None, help=help_text + " (repeatable)")
        else:
            kind = {"block_size": int, "seed": int}.get(f.name, type(f.default))
            g.add_argument(flag, type=kind, default=None, help=help_text, **meta)


def _config(args: argparse.Namespace, tokenizer, **forced):
    from ..sampling import GenerationConfig, preset

    overrides = {}
    for f in dataclasses.fields(GenerationConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name == "suppress_tokens":
            value = tuple(_token_id(tokenizer, v) for v in value)
        elif isinstance(f.default, tuple):
            value = tuple(value)
        overrides[f.name] = value
    return preset(args.preset, **{**overrides, **forced})


def _token_id(tokenizer, text: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    tid = tokenizer.convert_tokens_to_ids(text)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"--suppress-tokens {text!r} is neither an id nor a token of this tokenizer")
    return tid


def _load(args: argparse.Namespace):
    from ..models.checkpoint import load_for_inference

    loaded = load_for_inference(args.model, device=args.device, dtype=args.dtype)
    return loaded, loaded.settings.make_schedule()


def _read_lines(path: str, flag: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return [ln for ln in lines if ln.strip()]


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if getattr(args, "prompts_file", None):
        prompts += _read_lines(args.prompts_file, "--prompts-file")
    if not prompts:
        raise ValueError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def _generate(args: argparse.Namespace) -> int:
    from ..sampling import generate

    prompts = _read_prompts(args)
    loaded, schedule = _load(args)
    cfg = _config(args, loaded.tokenizer)
    for i in range(0, len(prompts), args.batch_size):
        batch = prompts[i : i + args.batch_size]
        t0 = time.perf_counter()
        try:
            out = generate(loaded.model, loaded.tokenizer, batch, cfg, schedule=schedule, mask_id=loaded.mask_id)
        except ValueError as exc:  # say which prompts (and which file) the engine refused
            source = f" of --prompts-file {args.prompts_file}" if args.prompts_file else ""
            raise ValueError(f"prompts {i + 1}-{i + len(batch)}{source}: {exc}") from exc
        seconds = time.perf_counter() - t0
        rate = sum(len(ids) for ids in out.token_ids) / max(seconds, 1e-9)
        for j, prompt in enumerate(batch):
            if args.json:
                row = {
                    "prompt": prompt,
                    "text": out.texts[j],
                    "forward_passes": out.row_passes[j],
                    "steps": out.steps,
                    "new_tokens": len(out.token_ids[j]),
                    "tokens_per_second": rate,
                    "seconds": seconds,
                }
                print(json.dumps(row, ensure_ascii=False), flush=True)
            else:
                text = out.texts[j]
                print(f"{prompt}{'' if text[:1].isspace() else ' '}{text}", flush=True)
    return 0


def _infill(args: argparse.Namespace) -> int:
    from ..sampling import infill

    texts = list(args.text or [])
    if args.texts_file:
        texts += _read_lines(args.texts_file, "--texts-file")
    if not texts:
        raise ValueError('give --text "... <mask> ..." (repeatable) or --texts-file FILE')
    loaded, schedule = _load(args)
    cfg = _config(args, loaded.tokenizer)
    t0 = time.perf_counter()
    out = infill(
        loaded.model, loaded.tokenizer, texts, cfg, span=args.span, schedule=schedule, mask_id=loaded.mask_id
    )
    seconds = time.perf_counter() - t0
    for j, text in enumerate(texts):
        if args.json:
            row = {
                "input": text,
                "text": out.texts[j],
                "fills": out.fills[j],
                "forward_passes": out.row_passes[j],
                "seconds": seconds,
            }
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            print(out.texts[j], flush=True)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from ..sampling import CHAT_STOP, chat_prompt, stream

    loaded, schedule = _load(args)
    tok = loaded.tokenizer
    cfg = _config(args, tok)
    if not cfg.stop:
        cfg = dataclasses.replace(cfg, stop=CHAT_STOP)
    limit = getattr(loaded.model.config, "max_position_embeddings", None) or 10**9
    live = args.live and sys.stdout.isatty()
    interactive = sys.stdin.isatty()
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = history[:1] if args.system else []
            continue
        history.append({"role": "user", "content": text})
        # Keep the newest turns that fit the context with room for the answer (the system turn stays).
        while True:
            prompt = chat_prompt(tok, history)
            n = len(tok(prompt, add_special_tokens=False)["input_ids"]) + 1
            turns = [i for i, m in enumerate(history) if m["role"] != "system"]
            if n + cfg.max_new_tokens <= limit or len(turns) <= 1:
                break
            del history[turns[0]]
        events = stream(loaded.model, tok, [prompt], cfg, schedule=schedule, mask_id=loaded.mask_id)
        out = _show_live(events, tok) if live else _last(events)
        answer = out.texts[0].strip()
        if not live:
            print(answer, flush=True)
        history.append({"role": "assistant", "content": answer})


def _last(events):
    for event in events:
        if event.output is not None:
            return event.output
    raise RuntimeError("the sampler ended without an output")


def _show_live(events, tokenizer):
    """Show the answer unmasking step by step (masks as ░), then leave the final text on screen."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    with Live(Text(""), console=console, refresh_per_second=30, transient=False) as view:
        for event in events:
            if event.output is not None:
                view.update(Text(event.output.texts[0].strip()))
                return event.output
            partial = event.partial_texts(tokenizer)[0]
            view.update(Text(partial + f"  [{event.forward_passes} passes]", style="dim"))
    raise RuntimeError("the sampler ended without an output")


def _denoise_plot(args: argparse.Namespace) -> int:
    from ..sampling import generate
    from ..sampling.plot import plot_denoising

    loaded, schedule = _load(args)
    cfg = _config(args, loaded.tokenizer)
    out = generate(
        loaded.model, loaded.tokenizer, [args.prompt], cfg, schedule=schedule, mask_id=loaded.mask_id
    )
    title = f"{args.prompt} … ({cfg.remasking}, {out.forward_passes} passes)"
    path = plot_denoising(loaded.tokenizer, out, args.out, title=title)
    print(f"{args.prompt} {out.texts[0]}\nplot: {path}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="generate text by iterative unmasking")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--prompts-file", help="a file with one prompt per line")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per prompt (text, forward_passes, ...)"
    )
    add_device_flags(p)
    _add_config_flags(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("infill", help="fill the holes (<mask>, <mask:N>, [...]) of a text")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--text", action="append", help="text with holes (repeat for a batch)")
    p.add_argument("--texts-file", help="a file with one text per line")
    p.add_argument("--span", type=int, default=2, help="tokens per hole written without a length (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per text (text, fills, ...)")
    add_device_flags(p)
    _add_config_flags(p, SKIP_FOR_INFILL)
    p.set_defaults(func=_infill)

    p = sub.add_parser("chat", help="multi-turn chat; one user turn per line on stdin (/reset, /exit)")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--system", help="a system message")
    p.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the answer unmasking step by step (default on in a terminal)",
    )
    add_device_flags(p)
    _add_config_flags(p)
    p.set_defaults(func=_chat)

    p = sub.add_parser("denoise-plot", help="plot which token was committed at which step")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", default="denoise.png", help="PNG path (default denoise.png)")
    add_device_flags(p)
    _add_config_flags(p)
    p.set_defaults(func=_denoise_plot)
