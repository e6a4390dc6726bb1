"""Load benchmark of ``diffutron serve``: continuous batching against one request at a time, same run.

    python benchmarks/serve_load.py                           # a random small model, ~2 minutes on 2 cores
    python benchmarks/serve_load.py --model runs/quickstart/model --seconds 15

For each mode (``--max-batch 64``: requests join the running batch; ``--max-batch 1``: one request at a
time) a server is started as a subprocess on 127.0.0.1 and 1, 4, 16 and 64 client threads send
``/v1/completions`` requests back to back for ``--seconds`` each (every loop is bounded in count and
time; loopback only), then the requests in flight are waited for (``--drain``, default 120 s at most).
Prints requests/s, generated tokens/s, p50/p95 latency and errors per level, and
the ratio of generated tokens/s batched / one-at-a-time; writes ``serve_load.json`` into ``--out``.
Without ``--model`` a randomly initialised ModernBERT (``--hidden 256 --layers 4``) with a tokenizer trained
on the embedded corpus stands in: the speed of serving does not depend on what the weights say.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

PROMPTS = [
    "Türkiye'nin başkenti",
    "İzmir'in havası bugün",
    "Öğretmenimiz bize bir şiir okudu ve",
    "Kütüphanedeki kitapların çoğu",
    "Iğdır'dan İstanbul'a giden otobüs",
    "Denizin kıyısında oturup",
]


def random_model(out: Path, args_hidden: int, args_layers: int) -> Path:
    import torch
    from transformers import ModernBertForMaskedLM

    from diffutron.data.corpus import embedded_documents
    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint
    from diffutron.models.presets import preset_config
    from diffutron.text.tokenizer import train_tokenizer

    try:
        docs = [d for _, d in zip(range(200), embedded_documents(), strict=False)]
    except Exception:  # noqa: BLE001 - corpus package missing: the prompts are text enough
        docs = PROMPTS * 50
    tok = train_tokenizer(docs + PROMPTS, vocab_size=4000, min_frequency=2)
    torch.manual_seed(0)
    cfg = preset_config(
        "tiny",
        tok,
        hidden_size=args_hidden,
        num_hidden_layers=args_layers,
        num_attention_heads=4,
        intermediate_size=2 * args_hidden,
        max_position_embeddings=512,
    )
    save_checkpoint(out, ModernBertForMaskedLM(cfg), tok, DiffusionSettings(mask_token_id=tok.mask_token_id))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: Path, max_batch: int, threads: int, dtype: str = "auto"
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffutron.cli",
            "serve",
            str(model),
            "--port",
            str(port),
            "--name",
            "bench",
            "--max-batch",
            str(max_batch),
            "--max-queue",
            "1024",
            "--log-level",
            "warning",
            "--dtype",
            dtype,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited at start")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


def load(
    url: str, clients: int, seconds: float, body: dict, drain: float = 120.0, max_requests: int = 10_000
) -> dict:
    """``clients`` threads, each sending requests back to back for ``seconds``; then the requests in
    flight are waited for (up to ``drain`` more seconds; one still running then is given up and counted
    as ``cut``, not as an error). Throughput is the tokens of all completed requests over the time
    until the last one completed, so a level whose requests outlast the window (64 rows in one batch
    on a CPU) is measured, not lost; every level ends within ``seconds + drain``."""
    start = time.monotonic()
    stop_at = start + seconds
    first_error: dict[str, str] = {}

    def client(k: int) -> list[tuple[float, int, str]]:
        done = []
        with httpx.Client(base_url=url) as http:
            for i in range(max_requests):
                if time.monotonic() >= stop_at:
                    break
                t0 = time.monotonic()
                prompt = PROMPTS[(k + i) % len(PROMPTS)]
                try:
                    r = http.post(
                        "/v1/completions",
                        json={**body, "prompt": prompt, "seed": k * 1000 + i},
                        timeout=max(1.0, stop_at + drain - t0),
                    )
                    status = "ok" if r.status_code == 200 else "error"
                    if status == "error":
                        first_error.setdefault("error", f"{r.status_code} {r.text[:200]}")
                    tokens = r.json()["usage"]["completion_tokens"] if status == "ok" else 0
                except httpx.TimeoutException:
                    status, tokens = "cut", 0
                except httpx.HTTPError as exc:
                    status, tokens = "error", 0
                    first_error.setdefault("error", repr(exc))
                done.append((time.monotonic() - t0, tokens, status))
        return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    elapsed = time.monotonic() - start
    ok = [r for r in results if r[2] == "ok"]
    lat = np.array([r[0] for r in ok])
    return {
        "clients": clients,
        "requests": len(ok),
        "errors": sum(r[2] == "error" for r in results),
        "cut": sum(r[2] == "cut" for r in results),
        "requests_per_s": len(ok) / elapsed,
        "tokens_per_s": sum(r[1] for r in ok) / elapsed,
        "p50_s": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95_s": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "seconds": elapsed,
        "first_error": first_error.get("error"),
    }


def measure(model: Path, body: dict, levels: list[int], dtype: str, args: argparse.Namespace) -> dict:
    """Both modes (batched first, then one at a time) at every client level, for one --dtype."""
    table: dict[str, list[dict]] = {}
    for mode, max_batch in (("batched", 64), ("one-at-a-time", 1)):
        proc, url = start_server(model, max_batch, args.threads, dtype)
        try:
            load(url, 1, 1.0, body)  # warm-up
            table[mode] = []
            for c in levels:
                row = load(url, c, args.seconds, body, drain=args.drain)
                table[mode].append(row)
                print(
                    f"{mode:>14} {c:>3} clients: {row['requests_per_s']:7.2f} req/s "
                    f"{row['tokens_per_s']:8.1f} tok/s  p50 {row['p50_s']:.3f}s  p95 {row['p95_s']:.3f}s  "
                    f"errors {row['errors']}, cut {row['cut']}, done {row['requests']} in {row['seconds']:.1f}s"
                    + (f" (first error: {row['first_error']})" if row["first_error"] else ""),
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\n| clients | mode | req/s | generated tok/s | p50 s | p95 s | errors / done | cut | level s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, c in enumerate(levels):
        for mode in table:
            r = table[mode][i]
            print(
                f"| {c} | {mode} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['p50_s']:.3f} | "
                f"{r['p95_s']:.3f} | {r['errors']}/{r['requests']} | {r['cut']} | {r['seconds']:.1f} |"
            )
    print("\n| clients | batched / one-at-a-time (generated tok/s) |\n|---|---|")
    ratios = {}
    for i, c in enumerate(levels):
        ratios[c] = table["batched"][i]["tokens_per_s"] / max(table["one-at-a-time"][i]["tokens_per_s"], 1e-9)
        print(f"| {c} | {ratios[c]:.2f}x |")
    return {"table": table, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint folder (default: a random small model)")
    ap.add_argument("--seconds", type=float, default=8.0, help="load time per level (default 8)")
    ap.add_argument(
        "--drain", type=float, default=120.0, help="then wait this long at most for requests in flight"
    )
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.1,
        help="0.1 (default, the diffutron preset's) or 0: greedy, no random draws",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server (default 1: the clients share the machine's cores; on the "
        "2-core VM two intra-op threads made a one-row step 10-30x slower whenever anything else ran)",
    )
    ap.add_argument(
        "--dtype",
        default="auto",
        help="the server's --dtype (auto: bf16 weights on a CPU with bf16 units, else fp32); "
        "a comma list such as fp32,bf16 measures each in turn, in the same run",
    )
    ap.add_argument("--hidden", type=int, default=256, help="random model: hidden size (default 256)")
    ap.add_argument("--layers", type=int, default=4, help="random model: layers (default 4)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    model = (
        Path(args.model) if args.model else random_model(Path(tmp.name) / "model", args.hidden, args.layers)
    )
    body = {
        "model": "bench",
        "max_tokens": args.max_tokens,
        "steps": args.steps,
        "block_size": 32,
        "temperature": args.temperature,
    }
    levels = [int(c) for c in args.clients.split(",")]
    results = {}
    for dtype in args.dtype.split(","):
        print(f"--dtype {dtype}", flush=True)
        results[dtype] = measure(model, body, levels, dtype, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps({"args": vars(args), "by_dtype": results}, indent=2))


if __name__ == "__main__":
    main()
