"""OIDC bearer-token verification: RS256/ES256 JWTs checked against a cached JWKS."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

import jwt
from jwt import PyJWK, PyJWKSet

# Asymmetric only, and pinned: the token header must never choose how it is verified beyond
# this list, or an attacker could sign with HS256 using the public key as the HMAC secret.
_ALGORITHMS = frozenset({"RS256", "ES256"})
_LEEWAY_SECONDS = 30
_FETCH_TIMEOUT_SECONDS = 5.0
# A JWKS is a few kilobytes; the cap stops a misbehaving endpoint from exhausting memory.
_MAX_JWKS_BYTES = 1 << 20
# Unknown kids come from unauthenticated callers, so forced refetches are rate limited to stop
# a stream of made-up kids from turning into a stream of requests to the identity provider.
_REFETCH_COOLDOWN_SECONDS = 10.0


class InvalidToken(Exception):
    """The token was rejected; the message says why and is safe to show the caller."""


class OidcVerifier:
    """Verifies JWTs issued by one OIDC provider for one audience. Thread-safe."""

    def __init__(
        self, issuer: str, audience: str, jwks_url: str, *, cache_seconds: float = 300.0
    ) -> None:
        if urlparse(jwks_url).scheme not in ("http", "https"):
            raise ValueError(f"the JWKS URL must be http(s), got {jwks_url!r}")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.cache_seconds = cache_seconds
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_forced_refetch: float | None = None
        # Serialises fetches so a cold or expired cache under load costs one request, not one
        # per waiting thread; readers holding a fresh cache never take it.
        self._fetch_lock = threading.Lock()

    def verify(self, token: str) -> dict[str, Any]:
        """Verify a JWT (RS256 or ES256 only) against the JWKS at jwks_url; return its claims."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        alg = header.get("alg")
        if alg not in _ALGORITHMS:
            raise InvalidToken(f"unsupported algorithm {alg!r}; only RS256 and ES256 are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token header has no key id (kid)")

        key = self._key_for(kid)
        # The JWK's own algorithm (declared or implied by its key type and curve) must match
        # the header's, so an RSA key can never be used to check an ES256 claim or vice versa.
        if key.algorithm_name != alg:
            raise InvalidToken(f"key {kid!r} is for {key.algorithm_name}, not {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("bad signature") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("wrong issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"missing required claim {exc.claim!r}") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("token not yet valid") from exc
        except jwt.DecodeError as exc:
            raise InvalidToken("malformed token") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token ({type(exc).__name__})") from exc
        return claims

    def _key_for(self, kid: str) -> PyJWK:
        keys, just_fetched = self._current_keys()
        key = keys.get(kid)
        if key is not None:
            return key
        if just_fetched:  # the set is as new as it gets; a second fetch would not help
            raise InvalidToken(f"unknown key id {kid!r}")
        # The provider may have rotated keys since our fetch: one refetch, then give up.
        with self._fetch_lock:
            key = self._keys.get(kid)
            if key is not None:  # another thread's refetch already brought it in
                return key
            now = time.monotonic()
            if (
                self._last_forced_refetch is not None
                and now - self._last_forced_refetch < _REFETCH_COOLDOWN_SECONDS
            ):
                raise InvalidToken(f"unknown key id {kid!r}")
            self._last_forced_refetch = now
            key = self._refresh_locked().get(kid)
        if key is None:
            raise InvalidToken(f"unknown key id {kid!r}")
        return key

    def _current_keys(self) -> tuple[dict[str, PyJWK], bool]:
        """The cached keys, refreshed first if stale, and whether this call fetched them."""
        if self._is_fresh():
            return self._keys, False
        with self._fetch_lock:
            if self._is_fresh():  # refreshed while we waited for the lock
                return self._keys, False
            return self._refresh_locked(), True

    def _is_fresh(self) -> bool:
        fetched_at = self._fetched_at
        return fetched_at is not None and time.monotonic() - fetched_at < self.cache_seconds

    def _refresh_locked(self) -> dict[str, PyJWK]:
        keys = self._fetch()
        # Swapped in whole (never mutated) so lock-free readers always see a complete set.
        self._keys = keys
        self._fetched_at = time.monotonic()
        return keys

    def _fetch(self) -> dict[str, PyJWK]:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.jwks_url, headers={"Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - scheme checked in __init__
                request, timeout=_FETCH_TIMEOUT_SECONDS
            ) as response:
                body = response.read(_MAX_JWKS_BYTES + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise InvalidToken("could not fetch signing keys from the JWKS endpoint") from exc
        if len(body) > _MAX_JWKS_BYTES:
            raise InvalidToken("the JWKS endpoint returned an oversized document")
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("the JWKS document is not a JSON object")
            jwk_set = PyJWKSet.from_dict(document)
        # The document is untrusted input; any shape PyJWT cannot parse is the same failure.
        except (ValueError, TypeError, KeyError, AttributeError, jwt.PyJWTError) as exc:
            raise InvalidToken("the JWKS endpoint returned an unusable key set") from exc
        return {
            key.key_id: key
            for key in jwk_set.keys
            if key.key_id and key.public_key_use in ("sig", None)
        }
