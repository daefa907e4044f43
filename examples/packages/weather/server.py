"""The tool server of the `weather-demo` package: what a package's `http` endpoint does with
NOME's calls (API.md §6a), in the standard library plus `standardwebhooks`.

Run it with the signing secret NOME showed once when the package was installed:

    NOME_SIGNING_SECRET=whsec_... python examples/packages/weather/server.py

It listens on 127.0.0.1, port `PORT` (default 8765), and answers `POST /tools`:

- every request must carry a valid Standard Webhooks signature (`webhook-id`,
  `webhook-timestamp`, `webhook-signature`) made with that secret, else 401;
- a retry (same `Idempotency-Key`, which NOME sets to the call's id) gets the first answer
  again, and the tool does not act twice;
- the body `{"tool", "arguments", "call_id", "run_id", "tenant_id"}` names `forecast` or
  `alert`; the answer is the tool's JSON result (always the same for the same arguments).

Tests start it in-process with `serve(0, secret)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

PATH = "/tools"
MAX_BODY = 1024 * 1024
# Answers kept for retries; the oldest are forgotten first.
MAX_REMEMBERED = 10_000

Answer = tuple[int, dict[str, Any]]


class Refused(Exception):
    """A call the server answers with an error status instead of a result."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _text(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value:
        raise Refused(400, "invalid_arguments", f"`{name}` must be a non-empty string")
    return value


def forecast(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"city": _text(arguments, "city"), "forecast": "sunny", "high_c": 21}


def alert(arguments: dict[str, Any]) -> dict[str, Any]:
    _text(arguments, "city")
    _text(arguments, "message")
    # A real server would send the alert here: the one effect a retry must not repeat.
    return {"sent": True}


TOOLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "forecast": forecast,
    "alert": alert,
}


class ToolServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str) -> None:
        self.webhook = Webhook(secret)  # first: a bad secret fails before the port is bound
        super().__init__(address, Handler)
        # Idempotency-Key -> (SHA-256 of the body, the answer given).
        self.answers: OrderedDict[str, tuple[str, Answer]] = OrderedDict()
        self.lock = threading.Lock()

    def answer(self, body: bytes, key: str | None) -> Answer:
        """The first answer for `key`, or a new one. Held under the lock, so two copies of
        one call arriving together still run the tool once."""
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            if key is not None and key in self.answers:
                first_digest, first = self.answers[key]
                if first_digest != digest:
                    return _error(409, "idempotency_conflict", "another body used this key")
                return first
            answer = _call(body)
            if key is not None:
                self.answers[key] = (digest, answer)
                while len(self.answers) > MAX_REMEMBERED:
                    self.answers.popitem(last=False)
            return answer


def _call(body: bytes) -> Answer:
    try:
        call = json.loads(body)
    except ValueError:
        return _error(400, "invalid_body", "the body is not JSON")
    if not isinstance(call, dict) or not isinstance(call.get("arguments", {}), dict):
        return _error(400, "invalid_body", "expected {tool, arguments, call_id, run_id, tenant_id}")
    name = call.get("tool")
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        return _error(400, "unknown_tool", f"no tool {name!r} here")
    try:
        return 200, tool(call.get("arguments", {}))
    except Refused as refused:
        return _error(refused.status, refused.code, refused.message)


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": message, "code": code}


class Handler(BaseHTTPRequestHandler):
    server: ToolServer

    def do_POST(self) -> None:
        if self.path != PATH:
            self._send(*_error(404, "not_found", f"tools are called at POST {PATH}"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(*_error(411, "length_required", "Content-Length is required"))
            return
        if not 0 <= length <= MAX_BODY:
            self._send(*_error(413, "too_large", f"bodies are at most {MAX_BODY} bytes"))
            return
        body = self.rfile.read(length)
        signed = {
            name: self.headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        try:
            self.server.webhook.verify(body, signed, json_parse=False)
        except (WebhookVerificationError, ValueError):
            # Whatever is wrong (missing, malformed, stale or not matching), it is not NOME.
            self._send(*_error(401, "bad_signature", "the request is not signed by NOME"))
            return
        self._send(*self.server.answer(body, self.headers.get("Idempotency-Key")))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(port: int, secret: str) -> tuple[ToolServer, threading.Thread]:
    """Start answering on 127.0.0.1:`port` (0: any free port, see `server.server_port`) in a
    daemon thread. Stop with `server.shutdown()` then `server.server_close()`."""
    server = ToolServer(("127.0.0.1", port), secret)
    thread = threading.Thread(target=server.serve_forever, name="weather-tools", daemon=True)
    thread.start()
    return server, thread


def main() -> None:
    secret = os.environ.get("NOME_SIGNING_SECRET", "")
    if not secret.startswith("whsec_"):
        sys.exit("set NOME_SIGNING_SECRET to the install's signing secret (whsec_...)")
    port = int(os.environ.get("PORT", "8765"))
    try:
        server, thread = serve(port, secret)
    except (ValueError, EmptyWebhookSecretError):
        sys.exit("NOME_SIGNING_SECRET is not a valid secret: whsec_ then base64")
    print(f"weather-demo tools at http://127.0.0.1:{server.server_port}{PATH}", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
