"""The HTTP server: OpenAI-compatible routes, diffusion routes, health, metrics and the page (FastAPI).

    app = create_app(model, tokenizer, schedule=schedule, mask_id=mask_id, model_name="my-model")
    run_server(app, host="127.0.0.1", port=8000)         # or: diffutron serve MODEL

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``, ``POST /v1/infill``,
``GET /health``, ``GET /metrics``, and the page at ``/`` (``static/``). Handlers parse and validate the
body, enqueue a job on the scheduler and await its events; they never touch the model. Every error is
an OpenAI-style object ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for bad
input (a 5xx only for a fault of the server itself). With an API key every route but ``/health`` and the
page's static files needs ``Authorization: Bearer KEY`` (compared in constant time).

Shutdown (SIGTERM, Ctrl-C): ``run_server`` stops accepting connections and starts the scheduler's drain
at once; requests in flight may finish within ``drain_seconds``, after which the scheduler fails them
cleanly (a stream ends with an error chunk and ``[DONE]``, a plain request gets a 503); then the app
shuts down and the process exits (uvicorn re-raises the signal). uvicorn's own cut-off, which would
cancel a response mid-body, is set later than the drain and is only a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..sampling import CHAT_STOP, PRESETS, SERVER_PRESET, chat_prompt
from .metrics import CONTENT_TYPE, Metrics
from .openai_schema import (
    BadRequest,
    ChatRequest,
    CompletionRequest,
    InfillRequest,
    Limits,
    sampling_configs,
)
from .scheduler import Closing, Job, QueueFull, Scheduler

log = logging.getLogger(__name__)
STATIC = resources.files("diffutron.serving") / "static"
PUBLIC = {"/health", "/", "/favicon.ico"}  # the page's shell and files hold no data: the browser loads them
ROUTES = {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/infill", "/"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param=None,
        code=None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param=None, code=None, headers=None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: API key, body-size cap (from Content-Length), requests-by-status metrics."""

    def __init__(self, app, api_key: str | None, max_body: int, metrics: Metrics):
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        status = {}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            response = self._reject(scope, path)
            if response is not None:
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status.get("code", 499))).inc()

    def _reject(self, scope, path: str) -> Response | None:
        headers = dict(scope["headers"])
        if self.expected is not None and path not in PUBLIC and not path.startswith("/static/"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return _error(
                    401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key"
                )
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return _error(413, f"request body over {self.max_body} bytes", code="body_too_large")
        return None


def create_app(
    model,
    tokenizer,
    *,
    schedule=None,
    mask_id: int | None = None,
    model_name: str = "diffutron",
    api_key: str | None = None,
    max_batch: int = 64,
    max_queue: int = 256,
    preset: str = SERVER_PRESET,
    limits: Limits | None = None,
    cors_origins: list[str] | None = None,
    max_body_bytes: int = 1 << 20,
    drain_seconds: float = 10.0,
) -> FastAPI:
    """The server app; the scheduler thread starts and stops with the app's lifespan."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    limits = limits or Limits()
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if context:
        limits.max_tokens = min(limits.max_tokens, context - 2)
    metrics = Metrics()
    scheduler = Scheduler(
        model, tokenizer, schedule, mask_id, max_batch=max_batch, max_queue=max_queue, metrics=metrics
    )
    created = int(time.time())
    presets = {name: dataclasses.asdict(cfg) for name, cfg in PRESETS.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.stop, drain_seconds)

    app = FastAPI(title="diffutron", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler, app.state.metrics, app.state.limits = scheduler, metrics, limits
    app.state.drain_seconds = drain_seconds

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        log.exception("unhandled error")
        return _error(500, "internal server error", kind="server_error")

    async def parse(request: Request, schema: type[pydantic.BaseModel]):
        body, size = bytearray(), 0
        async for chunk in request.stream():  # chunked bodies have no Content-Length: count here
            size += len(chunk)
            if size > max_body_bytes:
                raise ApiError(413, f"request body over {max_body_bytes} bytes", code="body_too_large")
            body += chunk
        try:
            data = json.loads(bytes(body), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ApiError(
                400, f"the body is not valid JSON: {str(exc)[:200]}", code="invalid_json"
            ) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        try:
            req = schema.model_validate(data)
        except pydantic.ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise ApiError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
        except RecursionError:
            raise ApiError(400, "the body is nested too deeply", code="invalid_json") from None
        if req.model != model_name:
            raise ApiError(
                404,
                f"the model {req.model!r} does not exist; this server has {model_name!r}",
                param="model",
                code="model_not_found",
            )
        return req

    async def run(request: Request, job: Job):
        """Submit and wait until the job's rows are running (bad input surfaces here as a 400)."""
        try:
            scheduler.submit(job)
        except QueueFull as exc:
            raise ApiError(
                429, str(exc), kind="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
            ) from None
        except Closing as exc:
            raise ApiError(503, str(exc), kind="server_error", code="shutting_down") from None
        try:
            while True:
                try:  # Queue.get is safe to time out (nothing is lost); the request may wait long in line
                    kind, _, data = await asyncio.wait_for(job._queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise asyncio.CancelledError from None
                    continue
                if kind == "admitted":
                    return job.events()
                if kind == "error":
                    raise _engine_error(data)
        except BaseException:
            scheduler.cancel(job)
            raise

    async def collect(request: Request, job: Job, events) -> dict[int, dict]:
        try:
            async for kind, _, data in events:
                if kind == "error":
                    raise _engine_error(data)
            return job.outputs
        finally:
            scheduler.cancel(job)  # no-op when done; frees the rows when the handler is cancelled

    def configs(req, stop=()):
        try:
            return sampling_configs(req, limits, preset, stop=stop)
        except BadRequest as exc:
            raise ApiError(400, str(exc), param=exc.param) from None

    # -- routes ----------------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue": scheduler.queue_depth, "rows": len(scheduler.batch.rows)}

    @app.get("/metrics")
    async def get_metrics():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "diffutron",
                    # what a request that names no preset decodes with, and every preset's values: the
                    # page fills its sampler fields from these
                    "diffutron": {"preset": preset, "presets": presets},
                }
            ],
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await parse(request, CompletionRequest)
        cfgs = configs(req)
        prompts = req.prompts()
        if len(prompts) * req.n > limits.max_n:
            raise ApiError(400, f"prompts x n must be <= {limits.max_n}", param="n")
        job = Job(
            prompts=[p for p in prompts for _ in cfgs],
            configs=cfgs * len(prompts),
            n=len(cfgs),
            want=_want(req),
        )
        return await respond(request, req, job, "text_completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await parse(request, ChatRequest)
        cfgs = configs(req, stop=CHAT_STOP)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages
        ]
        try:
            prompt = chat_prompt(tokenizer, messages)
        except Exception as exc:  # noqa: BLE001 - a template that rejects the conversation
            raise ApiError(400, f"messages: {exc}", param="messages") from None
        job = Job(prompts=[prompt] * len(cfgs), configs=cfgs, n=len(cfgs), want=_want(req))
        return await respond(request, req, job, "chat.completion")

    @app.post("/v1/infill")
    async def infill(request: Request):
        req = await parse(request, InfillRequest)
        cfgs = configs(req)
        job = Job(prompts=[req.prompt], configs=cfgs, infill=True, span=req.span, want=_want(req))
        return await respond(request, req, job, "infill")

    async def respond(request: Request, req, job: Job, kind: str):
        ident = {"text_completion": "cmpl-", "chat.completion": "chatcmpl-", "infill": "infill-"}[kind]
        ident += uuid.uuid4().hex[:24]
        t0 = time.monotonic()
        events = await run(request, job)
        head = {"id": ident, "created": int(time.time()), "model": model_name}
        if not req.stream:
            outputs = await collect(request, job, events)
            choices = [_choice(kind, i, outputs[i]) for i in sorted(outputs)]
            body = {**head, "object": kind, "choices": choices, "usage": usage(job)}
            body["diffutron"] = _stats(outputs, time.monotonic() - t0)
            return body
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        stream = _sse(scheduler, job, events, head, kind, req.stream_canvas, include_usage, t0)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/")
    async def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(Guard, api_key=api_key, max_body=max_body_bytes, metrics=metrics)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until SIGTERM / Ctrl-C, draining in-flight requests first (see above)."""
    import uvicorn

    drain = app.state.drain_seconds

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # uvicorn waits for open responses before the app's shutdown: start the drain now, or a
            # long request would run into uvicorn's cut-off and be cancelled mid-stream
            app.state.scheduler.close(drain)
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain + 10
    )
    DrainingServer(config).run()


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _want(req) -> str:
    if req.stream_canvas:
        return "canvas"
    return "text" if req.stream else "none"


def _engine_error(exc) -> ApiError:
    if isinstance(exc, Closing):
        return ApiError(503, str(exc), kind="server_error", code="shutting_down")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc)[:1000])
    return ApiError(500, str(exc)[:1000], kind="server_error")


def _choice(kind: str, i: int, out: dict) -> dict[str, Any]:
    if kind == "chat.completion":
        return {
            "index": i,
            "message": {"role": "assistant", "content": out["text"]},
            "finish_reason": out["finish_reason"],
            "logprobs": None,
        }
    choice = {"index": i, "text": out["text"], "finish_reason": out["finish_reason"], "logprobs": None}
    if kind == "infill":
        choice["fills"] = out["fills"]
    return choice


def _stats(outputs: dict[int, dict], seconds: float) -> dict[str, Any]:
    tokens = sum(o["tokens"] for o in outputs.values())
    return {
        "forward_passes": max((o["forward_passes"] for o in outputs.values()), default=0),
        "steps": max((o["steps"] for o in outputs.values()), default=0),
        "seconds": round(seconds, 4),
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 2),
    }


def usage(job: Job) -> dict[str, int]:
    """OpenAI's counts: each prompt once (its n choices share it), every answer token."""
    outputs = job.outputs
    prompt = sum(outputs[i]["prompt_tokens"] for i in range(0, len(job.rows), job.n) if i in outputs)
    completion = sum(o["tokens"] for o in outputs.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _held_back(text: str, stops: tuple[str, ...]) -> str:
    """The part of a growing text that is safe to send: cut at a stop string, keep back a tail that
    could still become one, and an incomplete UTF-8 character (decoded as U+FFFD)."""
    for s in stops:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                text = text[:-n]
                break
    return text.rstrip("\ufffd")


async def _sse(scheduler, job: Job, events, head, kind, canvas: bool, include_usage: bool, t0):
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``. A client that goes away
    cancels this generator; ``finally`` takes its rows out of the batch at the next step."""
    chunk_kind = {
        "text_completion": "text_completion",
        "chat.completion": "chat.completion.chunk",
        "infill": "infill.chunk",
    }[kind]
    if canvas:
        chunk_kind = "diffutron.canvas"
    sent: dict[int, str] = {}

    def chunk(i: int, text: str | None = None, finish=None, **extra) -> str:
        if canvas:
            choice = {"index": i, **extra, **({} if text is None else {"text": text})}
        elif kind == "chat.completion":
            delta = {} if text is None else {"content": text}
            if i not in sent:
                delta = {"role": "assistant", "content": text or ""}
            choice = {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": i, "text": text or "", "finish_reason": finish, "logprobs": None, **extra}
        return (
            "data: "
            + json.dumps({**head, "object": chunk_kind, "choices": [choice]}, ensure_ascii=False)
            + "\n\n"
        )

    try:
        async for ev, i, data in events:
            if ev == "error":
                err = _engine_error(data)
                body = {"error": {"message": err.message, "type": err.kind, "param": None, "code": err.code}}
                yield "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"
                break
            if ev == "step" and canvas:
                yield chunk(
                    i,
                    canvas=data["canvas"],
                    step=data["step"],
                    forward_passes=data["forward_passes"],
                    done=False,
                )
            elif ev == "step":
                stops = tuple(job.configs[i].stop)
                safe = _held_back(data["prefix"], stops)
                already = sent.get(i, "")
                if len(safe) > len(already) and safe.startswith(already):
                    piece = safe[len(already) :]
                    yield chunk(i, piece)
                    sent[i] = safe
            elif ev == "done" and canvas:
                yield chunk(
                    i,
                    canvas=data["canvas"],
                    step=data["steps"],
                    forward_passes=data["forward_passes"],
                    done=True,
                    text=data["text"],
                    fills=data["fills"],
                    finish_reason=data["finish_reason"],
                )
            elif ev == "done":
                already = sent.get(i, "")
                final = data["text"]
                rest = final[len(already) :] if final.startswith(already) else ""
                if rest or i not in sent:
                    yield chunk(i, rest)
                    sent[i] = final
                yield (
                    chunk(i, None, data["finish_reason"])
                    if kind == "chat.completion"
                    else chunk(i, "", data["finish_reason"])
                )
            elif ev == "end":
                if include_usage or canvas:
                    tail = {**head, "object": chunk_kind, "choices": [], "usage": usage(job)}
                    if canvas:
                        tail["diffutron"] = _stats(job.outputs, time.monotonic() - t0)
                    yield "data: " + json.dumps(tail, ensure_ascii=False) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        scheduler.cancel(job)
