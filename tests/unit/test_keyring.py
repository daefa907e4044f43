"""The deployment secret, NOME_SECRET_KEY, and the keys derived from it (nome_api/keyring.py)."""

from __future__ import annotations

import base64
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nome_api import keyring
from nome_api.keyring import Keyring, keyring_for, load_secret, new_secret, parse_secret
from nome_api.settings import Settings

POSTGRES = "postgresql://nome@127.0.0.1:5432/nome"


def test_a_well_formed_secret_key_is_accepted_with_or_without_padding() -> None:
    raw = secrets.token_bytes(32)
    padded = base64.urlsafe_b64encode(raw).decode()

    assert parse_secret(padded) == raw
    assert parse_secret(padded.rstrip("=")) == raw
    assert parse_secret(new_secret()) != parse_secret(new_secret())
    settings = Settings.from_env({"NOME_DATABASE_URL": POSTGRES, "NOME_SECRET_KEY": padded})
    assert settings.secret_key == padded


def test_a_malformed_secret_key_is_refused_saying_what_is_expected_but_never_the_value() -> None:
    raw = bytes(range(200, 232))  # its standard base64 has `+` and `/`
    for bad in [
        "short",
        base64.urlsafe_b64encode(secrets.token_bytes(31)).decode(),
        base64.urlsafe_b64encode(secrets.token_bytes(33)).decode(),
        base64.b64encode(raw).decode(),
        new_secret()[:-1] + "!",
        new_secret()[:20] + " " + new_secret()[:23],
    ]:
        with pytest.raises(ValueError) as refused:
            Settings.from_env({"NOME_DATABASE_URL": POSTGRES, "NOME_SECRET_KEY": bad})
        message = str(refused.value)
        assert "NOME_SECRET_KEY must be base64url of 32 random bytes" in message, bad
        assert bad not in message


def test_postgres_without_a_secret_key_is_refused_naming_the_variable() -> None:
    for url in (POSTGRES, "postgres://nome@db/nome"):
        with pytest.raises(ValueError, match="NOME_SECRET_KEY is not set; it is required"):
            Settings.from_env({"NOME_DATABASE_URL": url})
        # An empty value is no value.
        with pytest.raises(ValueError, match="NOME_SECRET_KEY is not set"):
            Settings.from_env({"NOME_DATABASE_URL": url, "NOME_SECRET_KEY": ""})
    # The embedded default makes its own.
    assert Settings.from_env({}).secret_key is None


def test_the_audit_key_is_the_documented_hkdf_derivation_of_the_secret() -> None:
    secret = bytes(range(32))
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"nome/audit-signing/v1"
    ).derive(secret)
    expected = Ed25519PrivateKey.from_private_bytes(seed).public_key()

    ring = Keyring(secret)

    assert ring.audit_public_key.public_bytes_raw() == expected.public_bytes_raw()
    assert Keyring(bytes(32)).audit_public_key.public_bytes_raw() != expected.public_bytes_raw()
    assert "nome/audit-signing/v1" in Path(keyring.__file__).read_text()


def test_a_keyring_never_shows_its_secret() -> None:
    secret = secrets.token_bytes(32)

    shown = repr(Keyring(secret)) + str(Keyring(secret))

    for form in (secret.hex(), base64.urlsafe_b64encode(secret).decode().rstrip("=")):
        assert form not in shown


def test_the_embedded_default_makes_its_secret_once_and_keeps_it_next_to_the_database(
    memory_settings: Settings,
) -> None:
    database = Path(memory_settings.database_url.removeprefix("sqlite:///"))
    kept = database.parent / "secret.key"
    assert not kept.exists()

    first = load_secret(None, memory_settings.database_url)

    assert kept.exists()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert parse_secret(kept.read_text()) == first
    # A restart reads it back rather than making another.
    assert load_secret(None, memory_settings.database_url) == first
    signing = keyring_for(memory_settings).audit_public_key.public_bytes_raw()
    assert signing == Keyring(first).audit_public_key.public_bytes_raw()


def test_the_make_run_default_keeps_its_secret_in_dot_nome() -> None:
    assert Settings().database_url == "sqlite:///./.nome/events.db"
    assert keyring.secret_path(Settings().database_url) == Path(".nome/secret.key")
    assert keyring.secret_path(POSTGRES) is None
    assert keyring.secret_path("sqlite:///:memory:") is None


def test_processes_starting_at_once_agree_on_one_embedded_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh/events.db"

    with ThreadPoolExecutor(8) as pool:
        loaded = set(pool.map(lambda _: load_secret(None, url), range(32)))

    assert len(loaded) == 1
    # Each writer's scratch file is gone: only the key is left.
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == ["secret.key"]


def test_a_damaged_kept_secret_is_refused_naming_the_file(tmp_path: Path) -> None:
    kept = tmp_path / "secret.key"
    kept.write_text("not a key\n")

    with pytest.raises(ValueError, match=r"secret\.key does not hold a secret key"):
        load_secret(None, f"sqlite:///{tmp_path}/events.db")
