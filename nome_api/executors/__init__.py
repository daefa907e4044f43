"""One executor per tool source: how a tool's call actually runs (nome_core/tools/executor.py
decides what its outcome means). Built-in tools run in this process; package tools (HTTP
endpoints, MCP servers) come with the marketplace."""
