"""A fake OpenAI Chat Completions server that speaks the real streaming wire format.

It is a stdlib `ThreadingHTTPServer` in a daemon thread, so it serves the worker whether the
worker runs in this process (the `api` fixture) or in a `nome serve --role worker` child.
Each request is answered by the next `Reply` of a script; a reply is a list of steps: a chunk
to send (`data: {json}`), a raw line (a malformed one), a pause, a `threading.Event` to wait
for, so a test can hold a model turn open exactly as long as it needs to (no timing
guesses), or dropping the connection mid-stream. A reply may instead be a status with
headers (429 with `Retry-After`, 500) or a whole body of any type (a 200 HTML page).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How long a held reply waits for its gate before giving up (a safety bound, not a timing).
HOLD_LIMIT_S = 60.0


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Abort:
    """Drop the connection here, without finishing the chunked body."""


@dataclass(frozen=True)
class Raw:
    """A line sent as it is, not as `data: {json}` (a malformed stream line)."""

    line: bytes


Step = dict[str, Any] | Pause | threading.Event | Abort | Raw


@dataclass(frozen=True)
class Reply:
    """One answer to one POST /chat/completions: a status and, when 200, streamed steps, or
    a whole `body` of `content_type`."""

    steps: Sequence[Step] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class Request:
    """What the fake received: the JSON body, the Authorization header, and when (on the
    monotonic clock)."""

    body: dict[str, Any]
    authorization: str | None
    at: float = 0.0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """A `chat.completion.chunk` object as OpenAI sends it."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-fake",
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def text_reply(
    pieces: Iterable[str],
    *,
    pause: float = 0.0,
    hold: threading.Event | None = None,
    hold_after: int = 0,
) -> Reply:
    """An assistant text answer in `pieces`; with `hold`, it stops after `hold_after` pieces
    until the event is set."""
    steps: list[Step] = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for index, piece in enumerate(pieces):
        if hold is not None and index == hold_after:
            steps.append(hold)
        if pause and index:
            steps.append(Pause(pause))
        steps.append(chunk({"content": piece}))
    steps.append(chunk({}, finish_reason="stop"))
    return Reply(steps)


def tool_call_reply(call_id: str, wire_name: str, argument_pieces: Iterable[str]) -> Reply:
    """One tool call whose JSON arguments arrive split over several chunks."""
    steps: list[Step] = [
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": wire_name, "arguments": ""},
                    }
                ],
            }
        )
    ]
    for piece in argument_pieces:
        steps.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    steps.append(chunk({}, finish_reason="tool_calls"))
    return Reply(steps)


def error_reply(status: int = 500, *, retry_after: str | None = None) -> Reply:
    """An error status with OpenAI's error body (and a `Retry-After`, if given)."""
    return Reply(status=status, headers={"Retry-After": retry_after} if retry_after else {})


def html_reply() -> Reply:
    """A 200 that is not a model's answer: a proxy's or a login page's HTML."""
    page = b"<!doctype html><html><body><h1>Welcome</h1></body></html>"
    return Reply(body=page, content_type="text/html; charset=utf-8")


def malformed_reply(pieces: Iterable[str]) -> Reply:
    """Some text, then a stream line that is not JSON, then more that never matters."""
    steps: list[Step] = [chunk({"role": "assistant", "content": ""})]
    steps += [chunk({"content": piece}) for piece in pieces]
    return Reply([*steps, Raw(b'data: {"choices": [{"delta": {"content": "tru'), chunk({})])


def broken_reply(pieces: Iterable[str]) -> Reply:
    """Some text, and then the server goes away in the middle of the stream."""
    steps: list[Step] = [chunk({"role": "assistant", "content": ""})]
    steps += [chunk({"content": piece}) for piece in pieces]
    return Reply([*steps, Abort()])


@dataclass
class FakeOpenAI:
    """Serves `script(n, body)` for the n-th request (0-based); records every request."""

    script: Callable[[int, dict[str, Any]], Reply]
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def replying(cls, *replies: Reply) -> FakeOpenAI:
        """Answer the n-th request with the n-th reply, and later ones with the last reply."""
        return cls(lambda n, _body: replies[min(n, len(replies) - 1)])

    def answer_with(self, *replies: Reply) -> None:
        """From now on, answer the n-th request with the n-th reply (the last one repeats)."""
        self.script = lambda n, _body: replies[min(n, len(replies) - 1)]

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": "not found", "type": "invalid"}})
                    return
                body = json.loads(raw)
                with fake._lock:
                    index = len(fake.requests)
                    fake.requests.append(
                        Request(body, self.headers.get("Authorization"), time.monotonic())
                    )
                reply = fake.script(index, body)
                if reply.status != 200:
                    self._json(
                        reply.status,
                        {"error": {"message": "The server had an error", "type": "server_error"}},
                        reply.headers,
                    )
                    return
                if reply.body is not None:
                    self._whole(reply.body, reply.content_type)
                    return
                # The worker may go away mid-turn (a killed process).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._stream(reply.steps)

            def _json(
                self, status: int, payload: dict[str, Any], headers: Mapping[str, str] = {}
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _whole(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, steps: Sequence[Step]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for step in steps:
                    if isinstance(step, Abort):
                        self.close_connection = True
                        return
                    if isinstance(step, Pause):
                        threading.Event().wait(step.seconds)
                    elif isinstance(step, threading.Event):
                        step.wait(HOLD_LIMIT_S)
                    elif isinstance(step, Raw):
                        self._send(step.line + b"\n\n")
                    else:
                        self._send(b"data: " + json.dumps(step).encode() + b"\n\n")
                self._send(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _send(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
