"""Helpers for integration tests: a fake OpenAI server, NOME processes, SSE reading."""
