"""The OpenAI-compatible API on a live loopback server with a micro model, through the ``openai`` client."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time

import httpx
import openai
import pytest

from diffutron.sampling import CHAT_STOP, PRESETS, SERVER_PRESET, chat_prompt, generate, infill, preset

FAST = {"steps": 8, "block_size": 4}  # extra body fields: the diffusion settings


def cfg(**kw):
    """The engine settings a request with FAST and these OpenAI fields maps to (the server's preset)."""
    mapped = {"max_new_tokens": kw.pop("max_tokens", 64), **FAST, **kw}
    return preset(SERVER_PRESET, **mapped)


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def alone(model, tokenizer, prompt, c):
    return generate(model, tokenizer, [prompt], c).texts[0]


def test_models_health_and_metrics(live, client):
    assert [m.id for m in client.models.list().data] == ["micro"]
    # the page fills its sampler fields from this: the server's preset and every preset's values
    info = httpx.get(live.url + "/v1/models").json()["data"][0]["diffutron"]
    assert info["preset"] == SERVER_PRESET
    assert info["presets"]["fast"]["remasking"] == PRESETS["fast"].remasking
    assert info["presets"]["diffutron"]["steps"] == PRESETS["diffutron"].steps
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    text = httpx.get(live.url + "/metrics").text
    assert "diffutron_queue_depth" in text and "diffutron_forward_passes_total" in text


def test_completion_is_the_engine_output_with_usage(live, client, serve_model, tokenizer):
    r = client.completions.create(model="micro", prompt="Ankara", max_tokens=8, seed=3, extra_body=FAST)
    want = generate(serve_model, tokenizer, ["Ankara"], cfg(max_tokens=8, seed=3))
    assert r.choices[0].text == want.texts[0]
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.usage.completion_tokens == len(want.token_ids[0])
    assert r.usage.prompt_tokens == len(tokenizer("Ankara", add_special_tokens=False)["input_ids"]) + 1
    assert r.choices[0].finish_reason in ("stop", "length")


def test_n_choices_sample_with_seed_plus_index(client, serve_model, tokenizer):
    r = client.completions.create(
        model="micro",
        prompt="İzmir'in havası",
        max_tokens=6,
        n=3,
        seed=11,
        temperature=1.0,
        extra_body=FAST,
    )
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    assert texts == [
        alone(serve_model, tokenizer, "İzmir'in havası", cfg(max_tokens=6, seed=11 + i, temperature=1.0))
        for i in range(3)
    ]
    assert len(set(texts)) > 1


def test_chat_uses_the_chat_template_and_its_stop(client, serve_model, tokenizer):
    messages = [
        {"role": "system", "content": "Kısa cevap ver."},
        {"role": "user", "content": "Başkent neresi?"},
    ]
    r = client.chat.completions.create(
        model="micro", messages=messages, max_tokens=8, seed=2, extra_body=FAST
    )
    c = cfg(max_tokens=8, seed=2, stop=CHAT_STOP)
    assert r.choices[0].message.content == alone(serve_model, tokenizer, chat_prompt(tokenizer, messages), c)
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"


def test_streamed_text_concatenates_to_the_whole_answer(client):
    body = dict(
        model="micro", prompt="Öğretmenimiz bugün", max_tokens=12, seed=5, extra_body={**FAST, "steps": 12}
    )
    whole = client.completions.create(**body).choices[0].text
    chunks = list(client.completions.create(**body, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) >= 2  # it really streamed


def test_chat_stream_deltas_and_usage(client):
    body = dict(
        model="micro",
        messages=[{"role": "user", "content": "Merhaba!"}],
        max_tokens=8,
        seed=4,
        extra_body=FAST,
    )
    whole = client.chat.completions.create(**body).choices[0].message.content
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_sse_wire_format(live):
    body = {"model": "micro", "prompt": "Ankara", "max_tokens": 4, "stream": True, **FAST}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    for e in events[:-1]:
        chunk = json.loads(e[len("data: ") :])
        assert chunk["object"] == "text_completion" and chunk["model"] == "micro"
        assert set(chunk["choices"][0]) >= {"index", "text", "finish_reason"}


def test_stop_strings_cut_the_answer(client):
    body = dict(model="micro", prompt="Ankara", max_tokens=10, seed=1, extra_body={**FAST, "steps": 10})
    full = client.completions.create(**body).choices[0].text
    stop = full.strip()[2:4]
    assert stop
    r = client.completions.create(**body, stop=[stop])
    assert stop not in r.choices[0].text and r.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(**body, stop=[stop], stream=True) if c.choices
    )
    assert streamed == r.choices[0].text


def test_infill_fills_only_the_holes(live, serve_model, tokenizer):
    text = "Ankara Türkiye'nin <mask:3> şehridir."
    r = httpx.post(
        live.url + "/v1/infill", json={"model": "micro", "prompt": text, "seed": 0, **FAST}, timeout=60
    )
    assert r.status_code == 200, r.text
    want = infill(serve_model, tokenizer, [text], preset(SERVER_PRESET, **FAST, seed=0))
    assert (
        r.json()["choices"][0]["text"] == want.texts[0] and r.json()["choices"][0]["fills"] == want.fills[0]
    )


def test_canvas_stream_shows_masks_turning_into_words(live):
    body = {
        "model": "micro",
        "messages": [{"role": "user", "content": "Merhaba"}],
        "max_tokens": 8,
        "stream": True,
        "stream_canvas": True,
        **FAST,
    }
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [json.loads(e[6:]) for e in r.read().decode().split("\n\n") if e and e != "data: [DONE]"]
    steps = [e["choices"][0] for e in events if e["choices"] and not e["choices"][0]["done"]]
    final = [e["choices"][0] for e in events if e["choices"] and e["choices"][0]["done"]]
    assert len(steps) >= 2 and all(isinstance(s, int) for s in steps[0]["canvas"] if not isinstance(s, str))
    assert sum(s for s in steps[0]["canvas"] if isinstance(s, int)) > 0  # masks at the first step
    assert len(final) == 1 and final[0]["text"] is not None
    assert events[-1]["usage"]["completion_tokens"] > 0 and events[-1]["diffutron"]["forward_passes"] > 0


def test_concurrent_requests_share_passes_and_match_alone(live, client, serve_model, tokenizer):
    """Same seed, same text: each request of a concurrent burst (mixed prompts, lengths, settings)
    equals the engine alone — while the server really batched them."""
    jobs = [
        ("Ankara", dict(max_tokens=8, seed=1, temperature=0.8)),
        ("İzmir'in havası bugün çok", dict(max_tokens=6, seed=2, temperature=0.0)),
        ("Iğdır", dict(max_tokens=10, seed=3, temperature=1.2, top_p=0.9)),
        ("Kütüphanedeki kitapların çoğu", dict(max_tokens=8, seed=4, remasking="threshold", threshold=0.3)),
        ("Gençler", dict(max_tokens=4, seed=5, remasking="random", temperature=1.0)),
        ("Denizin kıyısında", dict(max_tokens=8, seed=6, repetition_penalty=1.5, temperature=0.5)),
        # the adaptive rules of issue 26 (with revision), batched beside the others
        (
            "Çocuklar bahçede",
            dict(max_tokens=8, seed=7, remasking="factor", factor=2.0, remask_threshold=0.2, remask_budget=2),
        ),
        ("Öğretmen", dict(max_tokens=6, seed=8, remasking="entropy_budget", entropy_budget=3.0)),
    ] * 2
    before = _histogram_sum(live)

    def call(job):
        prompt, kw = job
        kw = dict(kw)
        extra = {
            **FAST,
            **{
                k: kw.pop(k)
                for k in (
                    "remasking",
                    "threshold",
                    "factor",
                    "entropy_budget",
                    "remask_threshold",
                    "remask_budget",
                    "repetition_penalty",
                )
                if k in kw
            },
        }
        return client.completions.create(model="micro", prompt=prompt, extra_body=extra, **kw).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(call, jobs))
    for (prompt, kw), text in zip(jobs, got, strict=True):
        assert text == alone(serve_model, tokenizer, prompt, cfg(**kw)), (prompt, kw)
    count, rows = _histogram_sum(live)
    assert (rows - before[1]) / max(1, count - before[0]) > 1.5  # more than one row per pass on average


def _histogram_sum(live) -> tuple[float, float]:
    lines = httpx.get(live.url + "/metrics").text.splitlines()
    value = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("diffutron_batch_size_")}
    return value["diffutron_batch_size_count"], value["diffutron_batch_size_sum"]


def test_a_client_that_disconnects_mid_stream_frees_its_rows(live):
    body = {
        "model": "micro",
        "prompt": "Ankara",
        "max_tokens": 200,
        "stream": True,
        "stream_canvas": True,
        "steps": 1000,
        "block_size": 0,
        "remasking": "low_confidence",  # one token per step whatever the server's preset: a long job
        "stop": None,
    }
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()  # kept open: closing it early closes the connection
        assert next(line for line in lines if line.startswith("data: "))
        assert httpx.get(live.url + "/health").json()["rows"] == 1
        passes = _forward_passes(live)
    # the client has gone, 200 answer tokens in 1000 steps are far from done: the row must leave
    deadline = time.monotonic() + 10
    while httpx.get(live.url + "/health").json()["rows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(live.url + "/health").json()["rows"] == 0
    assert _forward_passes(live) < passes + 100


def _forward_passes(live) -> float:
    lines = httpx.get(live.url + "/metrics").text.splitlines()
    return next(float(ln.split()[1]) for ln in lines if ln.startswith("diffutron_forward_passes_total"))


def test_settings_are_validated_like_the_engine_does(client):
    with pytest.raises(openai.BadRequestError, match="threshold"):
        client.completions.create(model="micro", prompt="Ankara", extra_body={"threshold": 1.5})
    c = dataclasses.replace(cfg(), seed=None)
    assert c.seed is None


def test_an_earlier_turns_answer_end_does_not_end_the_chat_answer(client, tokenizer):
    """The chat stop ``[/Answer]`` closes every earlier assistant turn in the prompt; only the generated
    text is searched, so the answer is the one a request without that stop gets (cut at a stop it writes)."""
    messages = [
        {"role": "user", "content": "Başkent neresi?"},
        {"role": "assistant", "content": "Ankara."},
        {"role": "user", "content": "Peki en kalabalık şehir?"},
    ]
    assert CHAT_STOP[0] in chat_prompt(tokenizer, messages)
    body = dict(model="micro", messages=messages, max_tokens=12, seed=3, extra_body={**FAST, "steps": 12})
    free = client.chat.completions.create(**body, stop=["\u2603\u2603"])  # a stop it never writes
    assert free.usage.completion_tokens > FAST["block_size"]  # more than the first block: an early end shows
    r = client.chat.completions.create(**body)
    assert r.choices[0].message.content == free.choices[0].message.content.split(CHAT_STOP[0])[0]
    if CHAT_STOP[0] not in free.choices[0].message.content:
        assert r.usage.completion_tokens == free.usage.completion_tokens
        assert r.choices[0].finish_reason == free.choices[0].finish_reason
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**body, stream=True)
        if c.choices
    )
    assert streamed == r.choices[0].message.content


def _generated_tokens(live) -> float:
    lines = httpx.get(live.url + "/metrics").text.splitlines()
    return next(float(ln.split()[1]) for ln in lines if ln.startswith("diffutron_generated_tokens_total"))


def test_infill_counts_the_filled_positions_as_generated_and_the_rest_once_as_prompt(live, tokenizer):
    """Issue 20's text has 14 masked positions: usage, tokens/s (the page shows both) and /metrics count
    those 14 as generated; the text kept around the holes is prompt, counted once."""
    from diffutron.sampling.prompts import encode_with_holes

    text = "Efendiler, <mask:6> Türkiye Büyük Millet Meclisi <mask:8>"
    ids, holes = encode_with_holes(tokenizer, text, tokenizer.mask_token_id)
    assert sum(end - start for start, end in holes) == 14
    body = {"model": "micro", "prompt": text, "seed": 0, **FAST}
    before = _generated_tokens(live)
    r = httpx.post(live.url + "/v1/infill", json=body, timeout=60)
    assert r.status_code == 200, r.text
    usage, stats = r.json()["usage"], r.json()["diffutron"]
    assert usage == {"prompt_tokens": len(ids) - 14, "completion_tokens": 14, "total_tokens": len(ids)}
    assert stats["tokens_per_second"] * stats["seconds"] == pytest.approx(14, rel=0.02)
    assert _generated_tokens(live) - before == 14
    # the page reads usage and tokens/s from the canvas stream's last chunk
    with httpx.stream(
        "POST", live.url + "/v1/infill", json={**body, "stream": True, "stream_canvas": True}, timeout=60
    ) as s:
        events = [json.loads(e[6:]) for e in s.read().decode().split("\n\n") if e and e != "data: [DONE]"]
    last = events[-1]
    assert last["usage"] == usage
    assert last["diffutron"]["tokens_per_second"] * last["diffutron"]["seconds"] == pytest.approx(
        14, rel=0.02
    )
    assert _generated_tokens(live) - before == 28


def test_usage_counts_each_prompt_once_for_its_n_choices(client, tokenizer):
    """As OpenAI does: n choices of one prompt share it; a list of prompts counts each of them once."""
    prompts = ["Ankara", "İzmir'in havası"]
    r = client.completions.create(model="micro", prompt=prompts, n=2, max_tokens=4, seed=1, extra_body=FAST)
    assert len(r.choices) == 4
    own = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 1 for p in prompts]  # + <bos>
    assert r.usage.prompt_tokens == sum(own)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    messages = [{"role": "user", "content": "Merhaba!"}]
    chat = client.chat.completions.create(
        model="micro", messages=messages, n=3, max_tokens=4, extra_body=FAST
    )
    one = len(tokenizer(chat_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]) + 1
    assert len(chat.choices) == 3 and chat.usage.prompt_tokens == one
