"""The MCP server of the `notes-mcp` package: what a package's `mcp` endpoint is (API.md §6a),
built with the official MCP Python SDK (`mcp` 2.x, whose `MCPServer` was v1's `FastMCP`).

    python examples/packages/notes-mcp/server.py

It serves MCP over Streamable HTTP at http://127.0.0.1:`PORT`/mcp (default 8766) with three
tools: `add_note(text)` keeps a note in memory and returns it with its id, `count_notes()`
says how many there are, and `fail()` always returns an error result (`isError: true`), to
show what NOME makes of one. The manifest next to this file lists the first two; its
`description` and `input_schema` for each are exactly what this server reports in
`tools/list`, since installing the package compares their hashes.

Tests start it in-process with `serve(0)`, which returns a `RunningServer` to stop.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Annotated, Final, TypedDict

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

HOST: Final = "127.0.0.1"
PATH: Final = "/mcp"
DEFAULT_PORT: Final = 8766

# The manifest repeats these word for word (see the module docstring).
ADD_NOTE: Final = "Keep a short note and return it with its id."
COUNT_NOTES: Final = "How many notes are kept."
FAIL: Final = "Always fails: shows how an error result reaches the caller."


class Note(TypedDict):
    id: int
    text: str


class Count(TypedDict):
    count: int


def build() -> MCPServer:
    """A server with its own, empty, list of notes."""
    # WARNING: the SDK configures logging at INFO otherwise, a line per request.
    server = MCPServer(name="notes-mcp", version="1.0.0", log_level="WARNING")
    notes: list[str] = []
    # Sync tools may run on worker threads: one lock keeps ids unique.
    lock = threading.Lock()

    @server.tool(description=ADD_NOTE)
    def add_note(
        text: Annotated[str, Field(min_length=1, max_length=1000, description="The note's text.")],
    ) -> Note:
        with lock:
            notes.append(text)
            return {"id": len(notes), "text": text}

    @server.tool(description=COUNT_NOTES)
    def count_notes() -> Count:
        with lock:
            return {"count": len(notes)}

    @server.tool(description=FAIL, structured_output=False)
    def fail() -> None:
        # ToolError is the SDK's "anticipated failure": an `isError: true` result whose
        # content is this text, not a protocol error.
        raise ToolError("this tool always fails")

    return server


class RunningServer:
    """A server answering in a background thread; `stop()` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self.url = f"http://{HOST}:{port}{PATH}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()


def serve(port: int = DEFAULT_PORT, *, ready_timeout_s: float = 10.0) -> RunningServer:
    """Start answering on 127.0.0.1:`port` (0: any free port, see `.port`) in a daemon thread."""
    # Bound here rather than by uvicorn, so the port (chosen by the system for 0) is known
    # and a port in use fails in the caller's thread.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    bound_port: int = sock.getsockname()[1]
    app = build().streamable_http_app(streamable_http_path=PATH, host=HOST)
    # Sessions still open (a client's GET stream) must not hold a stop for long.
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="notes-mcp", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the notes-mcp server did not start")
        time.sleep(0.01)
    return RunningServer(server, thread, bound_port)


def main() -> None:
    running = serve(int(os.environ.get("PORT", str(DEFAULT_PORT))))
    print(f"notes-mcp at {running.url}", flush=True)
    running.wait()


if __name__ == "__main__":
    main()
