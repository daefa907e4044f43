"""The deployment secret, `NOME_SECRET_KEY`, and the keys derived from it.

One secret of 32 random bytes per deployment. Each use gets a key of its own, derived with
HKDF-SHA256 under a purpose label: a derived key tells nothing about the secret or about
another purpose's key, and a new use (the AES-GCM key for connector secrets, say) is one
more label and one more method on `Keyring`, not one more setting to deploy.

Where the secret comes from:

- `NOME_SECRET_KEY`: base64url of 32 random bytes. Required with PostgreSQL: the settings
  check refuses to start without it, because every process of a deployment must sign with
  the same key and none of them can make it up alone.
- unset with the embedded SQLite database (`make run`): made once and kept in `secret.key`
  next to the database file (mode 0600), so a restart signs with the same key.

Neither the secret nor a private key derived from it is ever logged or printed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from nome_api.settings import Settings

SECRET_BYTES = 32
KEY_FILE = "secret.key"
# Purpose labels: changing one changes every key derived under it.
AUDIT_SIGNING = b"nome/audit-signing/v1"
# Seals what an idempotent request's first answer needs and the log cannot give back.
SEALED_ANSWERS = b"nome/sealed-answers/v1"
# Each install's signing secret: this prefix and the install's id.
PACKAGE_SIGNING = b"nome/package-signing/v1/"

_MALFORMED = (
    "NOME_SECRET_KEY must be base64url of 32 random bytes (43 characters), e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def parse_secret(text: str) -> bytes:
    """The 32 bytes of a `NOME_SECRET_KEY` value (padding optional); a ValueError that
    says what is expected, never the value, when it is malformed."""
    body = text.strip().rstrip("=")
    # The decoder skips characters outside the alphabet: they would go unnoticed.
    if not body or not set(body) <= _BASE64URL:
        raise ValueError(_MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise ValueError(_MALFORMED) from None
    if len(raw) != SECRET_BYTES:
        raise ValueError(_MALFORMED)
    return raw


def new_secret() -> str:
    """A fresh `NOME_SECRET_KEY` value."""
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_path(database_url: str) -> Path | None:
    """Where the embedded deployment keeps its secret: next to its SQLite file. None for
    anything else (an in-memory SQLite database has no place to keep it)."""
    if not database_url.startswith("sqlite:///"):
        return None
    database = database_url[len("sqlite:///") :]
    if not database or database == ":memory:":
        return None
    return Path(database).parent / KEY_FILE


def load_secret(secret_key: str | None, database_url: str) -> bytes:
    """The deployment secret: `NOME_SECRET_KEY`, else (SQLite only) the kept one, made once."""
    if secret_key is not None:
        return parse_secret(secret_key)
    if not database_url.startswith("sqlite:"):
        # Settings.check refuses this at start-up; this is for settings built in code.
        raise ValueError("NOME_SECRET_KEY is not set: it is required with a PostgreSQL database")
    path = secret_path(database_url)
    if path is None:
        # The log lives only as long as this process; so may the key that signs it.
        return secrets.token_bytes(SECRET_BYTES)
    return _load_or_make(path)


def _load_or_make(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a name of its own, then linked into place: a process starting
        # at the same moment sees no file or a complete one, and the first link wins.
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(new_secret() + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process's link won
                os.link(scratch, path)
        finally:
            scratch.unlink(missing_ok=True)
    try:
        return parse_secret(path.read_text())
    except ValueError:
        raise ValueError(
            f"{path} does not hold a secret key (base64url of 32 random bytes): restore it, "
            "or delete it to make a new one (exports signed before will then verify only "
            "with the old public key)"
        ) from None


class Keyring:
    """The keys derived from one deployment secret, one per purpose."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"a deployment secret has {SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "Keyring(<secret>)"

    def _derive(self, purpose: bytes, length: int = 32) -> bytes:
        # No salt: the secret is already uniformly random, which is what a salt would buy.
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(
            self._secret
        )

    @functools.cached_property
    def audit_signing_key(self) -> Ed25519PrivateKey:
        """Signs the checkpoint that closes every audit export."""
        return Ed25519PrivateKey.from_private_bytes(self._derive(AUDIT_SIGNING))

    @property
    def audit_public_key(self) -> Ed25519PublicKey:
        """What auditors verify checkpoints with (`GET /v1/audit/public-key`)."""
        return self.audit_signing_key.public_key()

    @functools.cached_property
    def _answers(self) -> AESGCM:
        return AESGCM(self._derive(SEALED_ANSWERS))

    def seal(self, plain: bytes, *, context: bytes) -> bytes:
        """AES-GCM with a random nonce; `context` (e.g. the claim's key hash) is bound to it,
        so a sealed value cannot be moved to another claim."""
        nonce = os.urandom(12)
        return nonce + self._answers.encrypt(nonce, plain, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        return self._answers.decrypt(sealed[:12], sealed[12:], context)

    def signing_secret(self, install_id: str) -> str:
        """The Standard Webhooks secret NOME signs an install's tool calls with: derived,
        never stored, so no event, export or read model holds it; shown once at install.
        A new install (after an uninstall) gets a new one; an upgrade keeps it."""
        raw = self._derive(PACKAGE_SIGNING + install_id.encode())
        return "whsec_" + base64.b64encode(raw).decode()


def keyring_for(settings: Settings) -> Keyring:
    """The process's keyring for these settings, loaded (or, embedded, made) on first use."""
    return _keyring(settings.secret_key, settings.database_url)


@functools.lru_cache(maxsize=8)
def _keyring(secret_key: str | None, database_url: str) -> Keyring:
    # Keyed by the only two settings the secret depends on.
    return Keyring(load_secret(secret_key, database_url))
