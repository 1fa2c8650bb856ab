"""A local stand-in for the OpenAI and Anthropic HTTP APIs, on loopback, for the real clients.

It answers ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), both
plain and streamed (server-sent events), with the usage the request asks for: the last user
message is a JSON object such as ``{"input": 1200, "output": 80, "cache_read": 300,
"cache_write": 50, "reasoning": 20}`` (missing counts are 0). The response's model is the
dated id of the requested one (``DATED``), as the real APIs answer; each response gets a
fresh id. The usage is reported the way each API reports it:

- OpenAI: ``prompt_tokens`` counts every input token, cached ones included
  (``prompt_tokens_details.cached_tokens``); ``completion_tokens`` includes reasoning tokens.
- Anthropic: ``input_tokens`` excludes cache reads and writes, which come apart
  (``cache_read_input_tokens``, ``cache_creation_input_tokens``).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DATED", "LLMApi", "Usage"]

DATED: Mapping[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "o3-mini": "o3-mini-2025-01-31",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
}


@dataclass(frozen=True)
class Usage:
    """What one call consumed, in the provider-neutral terms of the request's JSON."""

    input: int = 0  # every input token, cache reads and writes included
    output: int = 0  # every output token, reasoning included
    cache_read: int = 0
    cache_write: int = 0  # of which cache_write_1h are Anthropic's 1-hour cache writes
    reasoning: int = 0
    cache_write_1h: int = 0

    def prompt(self) -> str:
        return json.dumps(
            {
                "input": self.input,
                "output": self.output,
                "cache_read": self.cache_read,
                "cache_write": self.cache_write,
                "reasoning": self.reasoning,
                "cache_write_1h": self.cache_write_1h,
            }
        )


_ids = itertools.count(1)


def _usage_of(messages: list[dict[str, Any]]) -> Usage:
    content = messages[-1]["content"]
    if isinstance(content, list):  # anthropic content blocks
        content = "".join(block.get("text", "") for block in content)
    return Usage(**json.loads(content))


def _openai_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0},
    }


def _anthropic_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input - u.cache_read - u.cache_write,
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation_input_tokens": u.cache_write,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write - u.cache_write_1h,
            "ephemeral_1h_input_tokens": u.cache_write_1h,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        model = body["model"]
        dated = DATED.get(model, model)
        usage = _usage_of(body["messages"])
        self.server.requests.append(body)  # type: ignore[attr-defined]
        if self.path.endswith("/chat/completions"):
            events = _openai(body, dated, usage)
        elif self.path.endswith("/messages"):
            events = _anthropic(body, dated, usage)
        else:
            self.send_error(404)
            return
        if body.get("stream"):
            self._stream(events)
        else:
            self._json(next(events))

    def _json(self, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{next(_ids)}")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[object]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        next(events)  # the non-streamed form comes first
        for event in events:
            if isinstance(event, tuple):
                name, doc = event
                chunk = f"event: {name}\ndata: {json.dumps(doc)}\n\n"
            else:
                chunk = f"data: {json.dumps(event) if event != '[DONE]' else event}\n\n"
            data = chunk.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _openai(body: dict[str, Any], model: str, u: Usage) -> Iterator[object]:
    rid = f"chatcmpl-{next(_ids)}"
    message = {"role": "assistant", "content": "ok", "refusal": None}
    yield {
        "id": rid,
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": _openai_usage(u),
        "system_fingerprint": "fp_local",
    }
    base = {"id": rid, "object": "chat.completion.chunk", "created": 1_764_000_000}
    base["model"] = model
    delta = {"role": "assistant", "content": "ok"}
    yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if body.get("stream_options", {}).get("include_usage"):
        yield {**base, "choices": [], "usage": _openai_usage(u)}
    yield "[DONE]"


def _anthropic(body: dict[str, Any], model: str, u: Usage) -> Iterator[object]:
    rid = f"msg_{next(_ids):024d}"
    usage = _anthropic_usage(u)
    message = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    yield message
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}  # fmt: skip
    yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "ok"}}  # fmt: skip
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": u.output}}  # fmt: skip
    yield "message_stop", {"type": "message_stop"}


class LLMApi:
    """The server, on a free loopback port, in a daemon thread; use as a context manager."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.requests = []  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.requests  # type: ignore[attr-defined,no-any-return]

    def __enter__(self) -> LLMApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
