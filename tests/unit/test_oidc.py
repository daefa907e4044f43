"""OidcVerifier against real keys and a real JWKS endpoint on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from nome_api.oidc import InvalidToken, OidcVerifier

ISSUER = "https://idp.example.test/"
AUDIENCE = "nome-api"


@dataclass
class Key:
    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}


def rsa_key(kid: str) -> Key:
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def rsa_signing() -> Key:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def ec_signing() -> Key:
    return ec_key("ec-1")


@dataclass
class JwksServer:
    keys: list[Key]
    status: int = 200
    hits: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def jwks(rsa_signing: Key, ec_signing: Key) -> Iterator[JwksServer]:
    state = JwksServer(keys=[rsa_signing, ec_signing])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits += 1
                status = state.status
                body = json.dumps({"keys": [key.jwk for key in state.keys]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def verifier(jwks: JwksServer) -> OidcVerifier:
    return OidcVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": now,
        "exp": now + 300,
        "nome_tenant": "acme",
        "nome_roles": ["viewer", "writer"],
        **overrides,
    }


def sign(key: Key, payload: dict[str, Any], kid: str | None = None) -> str:
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_a_valid_rs256_token_verifies_and_returns_its_claims(
    verifier: OidcVerifier, rsa_signing: Key
) -> None:
    result = verifier.verify(sign(rsa_signing, claims()))
    assert result["sub"] == "user-42"
    assert result["nome_tenant"] == "acme"
    assert result["nome_roles"] == ["viewer", "writer"]


def test_a_valid_es256_token_verifies(verifier: OidcVerifier, ec_signing: Key) -> None:
    assert verifier.verify(sign(ec_signing, claims()))["sub"] == "user-42"


def test_an_audience_list_containing_ours_is_accepted(
    verifier: OidcVerifier, rsa_signing: Key
) -> None:
    token = sign(rsa_signing, claims(aud=["other-api", AUDIENCE]))
    assert verifier.verify(token)["nome_tenant"] == "acme"


def test_a_token_expired_within_the_leeway_still_verifies(
    verifier: OidcVerifier, rsa_signing: Key
) -> None:
    token = sign(rsa_signing, claims(exp=int(time.time()) - 10))
    assert verifier.verify(token)["sub"] == "user-42"


def test_expired_token_is_rejected(verifier: OidcVerifier, rsa_signing: Key) -> None:
    token = sign(rsa_signing, claims(exp=int(time.time()) - 120))
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def test_token_without_exp_is_rejected(verifier: OidcVerifier, rsa_signing: Key) -> None:
    payload = claims()
    del payload["exp"]
    with pytest.raises(InvalidToken, match="exp"):
        verifier.verify(sign(rsa_signing, payload))


def test_wrong_audience_is_rejected(verifier: OidcVerifier, rsa_signing: Key) -> None:
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(sign(rsa_signing, claims(aud="someone-else")))


def test_wrong_issuer_is_rejected(verifier: OidcVerifier, rsa_signing: Key) -> None:
    with pytest.raises(InvalidToken, match="issuer"):
        verifier.verify(sign(rsa_signing, claims(iss="https://evil.example.test/")))


def test_token_signed_by_a_key_not_in_the_jwks_is_rejected(
    verifier: OidcVerifier, rsa_signing: Key
) -> None:
    forger = rsa_key("forger")
    # Claims the kid of a published key, so only the signature check can catch it.
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(sign(forger, claims(), kid=rsa_signing.kid))


def test_unknown_kid_is_rejected_after_at_most_one_refetch(
    verifier: OidcVerifier, jwks: JwksServer
) -> None:
    stranger = rsa_key("stranger")
    for _ in range(3):
        with pytest.raises(InvalidToken, match="unknown key id"):
            verifier.verify(sign(stranger, claims()))
    # The first fetch plus one forced refetch; made-up kids must not hammer the provider.
    assert jwks.hits == 2


def test_hs256_token_signed_with_the_rsa_public_key_is_rejected(
    verifier: OidcVerifier, rsa_signing: Key
) -> None:
    public_pem = rsa_signing.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hand_made({"alg": "HS256", "typ": "JWT", "kid": rsa_signing.kid}, claims(), public_pem)
    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(token)


def test_alg_none_token_is_rejected(verifier: OidcVerifier, rsa_signing: Key) -> None:
    token = hand_made({"alg": "none", "typ": "JWT", "kid": rsa_signing.kid}, claims(), None)
    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(token)


def test_es256_header_on_an_rsa_key_is_rejected(
    verifier: OidcVerifier, rsa_signing: Key, ec_signing: Key
) -> None:
    with pytest.raises(InvalidToken, match="not ES256"):
        verifier.verify(sign(ec_signing, claims(), kid=rsa_signing.kid))


@pytest.mark.parametrize("garbage", ["", "not a token", "a.b.c", "...", "eyJhbGciOi.x.y"])
def test_garbage_text_is_rejected(verifier: OidcVerifier, garbage: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify(garbage)


def test_a_rotated_key_verifies_after_one_refetch(
    verifier: OidcVerifier, jwks: JwksServer, rsa_signing: Key
) -> None:
    assert verifier.verify(sign(rsa_signing, claims()))["sub"] == "user-42"
    rotated = rsa_key("rsa-2")
    with jwks.lock:
        jwks.keys = [rotated]
    assert verifier.verify(sign(rotated, claims(sub="after-rotation")))["sub"] == "after-rotation"
    assert jwks.hits == 2


def test_repeated_verifications_fetch_the_jwks_once(
    verifier: OidcVerifier, jwks: JwksServer, rsa_signing: Key, ec_signing: Key
) -> None:
    for _ in range(5):
        verifier.verify(sign(rsa_signing, claims()))
        verifier.verify(sign(ec_signing, claims()))
    assert jwks.hits == 1


def test_concurrent_verifications_on_a_cold_cache_fetch_the_jwks_once(
    verifier: OidcVerifier, jwks: JwksServer, rsa_signing: Key
) -> None:
    token = sign(rsa_signing, claims())
    barrier = threading.Barrier(8)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(verifier.verify(token)["sub"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["user-42"] * 8
    assert jwks.hits == 1


def test_an_expired_cache_is_refetched(jwks: JwksServer, rsa_signing: Key) -> None:
    verifier = OidcVerifier(ISSUER, AUDIENCE, jwks.url, cache_seconds=0.05)
    verifier.verify(sign(rsa_signing, claims()))
    time.sleep(0.1)
    verifier.verify(sign(rsa_signing, claims()))
    assert jwks.hits == 2


def test_a_failing_jwks_endpoint_raises_invalid_token(
    verifier: OidcVerifier, jwks: JwksServer, rsa_signing: Key
) -> None:
    jwks.status = 503
    with pytest.raises(InvalidToken, match="could not fetch signing keys"):
        verifier.verify(sign(rsa_signing, claims()))


def test_an_unreachable_jwks_endpoint_raises_invalid_token(rsa_signing: Key) -> None:
    # Bind then close a port so nothing is listening on it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = OidcVerifier(ISSUER, AUDIENCE, f"http://127.0.0.1:{port}/jwks.json")
    with pytest.raises(InvalidToken, match="could not fetch signing keys"):
        verifier.verify(sign(rsa_signing, claims()))
