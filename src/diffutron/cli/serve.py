"""``diffutron serve``: the OpenAI-compatible server and the page (needs the ``serve`` extra).

diffutron serve MODEL                                  # http://127.0.0.1:8000, page at /
diffutron serve MODEL --port 9000 --api-key KEY --max-batch 32 --preset fast
"""

from __future__ import annotations

import argparse
import os


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - fail early, with the hint below, when the extra is missing

        from ..serving import create_app
        from ..serving.app import run_server
        from ..serving.openai_schema import Limits
    except ImportError as exc:
        raise RuntimeError(f'serving needs the serve extra: pip install "diffutron[serve]" ({exc})') from None
    from ..models.checkpoint import load_for_inference

    loaded = load_for_inference(args.model, device=args.device, dtype=args.dtype)
    api_key = args.api_key or os.environ.get("DIFFUTRON_API_KEY") or None
    app = create_app(
        loaded.model,
        loaded.tokenizer,
        schedule=loaded.settings.make_schedule(),
        mask_id=loaded.mask_id,
        model_name=args.name or args.model,
        api_key=api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        preset=args.preset,
        limits=Limits(max_tokens=args.max_tokens, max_n=args.max_n, max_steps=args.max_steps),
        cors_origins=args.cors_origin,
        max_body_bytes=args.max_body_bytes,
        drain_seconds=args.drain_seconds,
    )
    where = f"http://{args.host}:{args.port}"
    print(
        f"diffutron: serving {args.model} at {where} (page: {where}/, API: {where}/v1)"
        + (" with an API key" if api_key else ""),
        flush=True,
    )
    run_server(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_parsers(sub) -> None:
    from . import add_device_flags
    from .lazy import defer

    p = sub.add_parser("serve", help="OpenAI-compatible server with continuous batching, and a web page")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: env DIFFUTRON_API_KEY)")
    p.add_argument("--name", help="model id clients send (default: the MODEL argument)")
    add_device_flags(p)
    p.add_argument("--max-batch", type=int, default=64, help="rows decoded together (default 64)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting before 429 (default 256)")

    def add_preset() -> None:  # the presets live with the sampler, which imports torch: only when used
        from ..sampling import PRESETS, SERVER_PRESET

        p.add_argument(
            "--preset",
            default=SERVER_PRESET,
            choices=sorted(PRESETS),
            help=f"decoding settings of a request that names none (default {SERVER_PRESET})",
        )

    defer(p, add_preset)
    p.add_argument("--max-tokens", type=int, default=512, help="cap on max_tokens (default 512)")
    p.add_argument("--max-n", type=int, default=8, help="cap on choices per request (default 8)")
    p.add_argument("--max-steps", type=int, default=1024, help="cap on steps (default 1024)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body cap (default 1 MiB)")
    p.add_argument(
        "--cors-origin", action="append", help="allow this browser origin (repeatable; default none)"
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, let in-flight requests finish for this long, then fail them cleanly (default 10)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_serve)
