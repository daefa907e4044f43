"""One TLS client context for every outbound HTTP client (tool endpoints, MCP servers,
http.fetch, model servers). httpx otherwise builds a context and loads the CA bundle for
each client it makes, 30 to 50 ms a time here (measured by bench/marketplace.py), and a
client is made per call because one is bound to the event loop it first ran on."""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def client_context() -> ssl.SSLContext:
    """The CAs httpx trusts by default (certifi's), loaded once per process."""
    return ssl.create_default_context(cafile=certifi.where())
