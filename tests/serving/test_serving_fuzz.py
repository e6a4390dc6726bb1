"""Fuzz: over a thousand generated malformed or hostile requests; no 5xx, no hang, no memory growth."""

from __future__ import annotations

import json
import random
import socket

import httpx
import psutil

from diffutron.serving.openai_schema import Limits

from .helpers import LiveServer, make_app

PATHS = ["/v1/completions", "/v1/chat/completions", "/v1/infill"]
FIELDS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "steps",
    "block_size",
    "remasking",
    "threshold",
    "repetition_penalty",
    "top_k",
    "span",
    "preset",
    "stream_canvas",
    "role",
    "content",
    "\u0000",
    "ğüşİı",
    "__proto__",
]


def hostile_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(14)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**100, 7])
    if kind == 1:
        return rng.choice([0.0, -0.5, 1e308, -1e-308, 0.9, 2.5])
    if kind == 2:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 3:
        return rng.choice(
            ["", " ", "micro", "Ankara <mask:3> şehri", "\x00\x01\x1b[31m", "<mask:999999>", "[...0]"]
        )
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5 and depth < 4:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 6 and depth < 4:
        return {rng.choice(FIELDS): hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    if kind == 7:
        return [{"role": rng.choice(["user", "system", "x"]), "content": hostile_value(rng, depth + 1)}]
    if kind == 8:
        return "a" * rng.choice([10, 5000, 60_000])
    return rng.choice(["micro", "Ankara", 4, 0.5, "low_confidence", "threshold", "fast", 1])


def hostile_body(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:  # broken bytes: invalid UTF-8, truncated JSON, garbage
        return rng.choice(
            [
                b"\xff\xfe\x00{",
                b'{"model": "micro", "prompt": "\xc3\x28"}',
                b'{"a": ',
                b"null",
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
            ]
        )
    if kind == 1:  # deep nesting
        d = rng.choice([50, 1000, 100_000])
        return b'{"model": "micro", "prompt": ' + b"[" * d + b"]" * d + b"}"
    if kind == 2:
        return json.dumps(hostile_value(rng)).encode()
    body = {"model": "micro"}
    for _ in range(rng.randrange(1, 7)):
        body[rng.choice(FIELDS)] = hostile_value(rng)
    if rng.random() < 0.3:  # mostly valid, one field off
        body.update({"prompt": "Ankara <mask> şehri", "max_tokens": 4, "steps": 4})
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def test_a_thousand_hostile_requests_never_get_a_5xx(serve_model, tokenizer):
    # small caps so that the requests that happen to be valid stay cheap
    server = LiveServer(
        make_app(
            serve_model,
            tokenizer,
            limits=Limits(max_tokens=8, max_steps=8, max_n=2),
            max_body_bytes=256 * 1024,
        )
    )
    rng = random.Random(0)
    me = psutil.Process()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(50):  # warm up: allocator pools and caches reach their working size
                client.post("/v1/completions", json={"model": "micro", "prompt": "Ankara", "max_tokens": 4})
            rss0 = me.memory_info().rss
            codes: dict[int, int] = {}
            for i in range(1200):
                method = "POST" if i % 10 else rng.choice(["GET", "PUT", "DELETE", "POST"])
                path = (
                    rng.choice(PATHS) if i % 7 else rng.choice(["/", "/metrics", "/v1/../etc/passwd", "/%00"])
                )
                headers = {"Content-Type": rng.choice([b"application/json", b"text/plain", b"x/\xe7\xff"])}
                r = client.request(method, path, content=hostile_body(rng), headers=headers)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                assert r.status_code < 500, (r.status_code, r.text[:300])
            for _ in range(30):  # raw bytes that are not HTTP at all
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                    s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\r\n\r\n")
                    s.recv(1024)
            ok = client.post("/v1/completions", json={"model": "micro", "prompt": "Ankara", "max_tokens": 4})
            assert ok.status_code == 200 and ok.json()["choices"][0]["text"] is not None
            assert sum(c for s, c in codes.items() if 400 <= s < 500) > 900  # it really was hostile
            assert me.memory_info().rss < rss0 * 1.10
    finally:
        server.close()
