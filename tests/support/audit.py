"""Audit exports as the tests tamper with and check them: the fixed signing keys, the
stand-alone recipes of docs/audit-format.md run as an auditor would, checkpoint lines edited
or signed again, and single bytes flipped."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nome_core import audit
from nome_core.audit import Checkpoint, checkpoint_line

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-format.md"

# Fixed keys: the deployment's, and someone else's.
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"nome test audit key").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"someone else").digest())


def recipe() -> str:
    """The stand-alone verification script, exactly as the documentation prints it."""
    section = DOC.read_text().split("## Verify an export yourself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the recipe's code block is missing"
    return code.group(1)


def checkpoint_recipe() -> str:
    """The stand-alone checkpoint script (needs `cryptography`), as the documentation prints it."""
    section = DOC.read_text().split("### Verify its checkpoint yourself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the checkpoint recipe's code block is missing"
    return code.group(1)


def run_recipe(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the recipe as an auditor would: a fresh, isolated interpreter, stdlib only."""
    return subprocess.run(
        [sys.executable, "-I", "-c", recipe(), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_checkpoint_recipe(path: Path, key: str) -> subprocess.CompletedProcess[str]:
    """The checkpoint script in a fresh interpreter: the stdlib plus `cryptography`."""
    return subprocess.run(
        [sys.executable, "-I", "-c", checkpoint_recipe(), str(path), key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resigned(line: bytes, key: Ed25519PrivateKey = KEY, **changes: object) -> bytes:
    """A checkpoint line with some fields changed and signed again with `key`."""
    body = json.loads(line)["checkpoint"]
    checkpoint = msgspec.convert({**body, **changes}, Checkpoint)
    return checkpoint_line(checkpoint, key).rstrip(b"\n")


def edited(line: bytes, **changes: object) -> bytes:
    """A checkpoint line with some fields changed and its signature left as it was."""
    document = json.loads(line)
    document["checkpoint"].update(changes)
    return audit.canonical_json(document)


def stream_of(line: bytes) -> str:
    return str(json.loads(line)["stream_id"])


def successors(lines: Sequence[bytes]) -> dict[int, int]:
    """Index of each line -> index of the next line of the same stream (if any)."""
    following: dict[int, int] = {}
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        stream = stream_of(line)
        if stream in last:
            following[last[stream]] = i
        last[stream] = i
    return following


def flip(line: bytes, at: int) -> bytes:
    """Flip the lowest bit of one letter or digit: still valid JSON, one byte different."""
    assert line[at] < 0x80 and chr(line[at]).isalnum()
    return line[:at] + bytes([line[at] ^ 1]) + line[at + 1 :]
