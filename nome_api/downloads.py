"""The release manifest (`NOME_DOWNLOADS_FILE`, API.md §6): the client builds a deployment
offers, and whether a caller's build is behind or no longer supported.

Read and checked against its JSON Schema once, at start-up: a manifest that does not
validate stops the server with the issues listed, instead of failing requests later.
Versions compare by SemVer 2.0 precedence (1.10.0 > 1.9.0, 2.0.0-rc.1 < 2.0.0).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import semver
from jsonschema import Draft202012Validator

from nome_core.events import Client


class Release(msgspec.Struct, frozen=True, kw_only=True):
    surface: str
    platform: str
    version: str
    url: str
    sha256: str
    size: int
    released_at: str


class ClientStatus(msgspec.Struct, kw_only=True):
    """The caller's build identity, and where it stands against the manifest."""

    surface: str | None
    version: str | None
    revision: str | None
    latest_version: str | None
    update_available: bool
    update_required: bool


class ManifestError(ValueError):
    """The manifest cannot be read or does not match its schema."""


def _schema() -> dict[str, Any]:
    text = resources.files("nome_api").joinpath("downloads.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


class Downloads:
    """The releases, newest first (by version, then release time), and the oldest version
    each surface still supports."""

    def __init__(self, releases: list[Release], min_supported: dict[str, str]) -> None:
        self.releases = sorted(
            releases, key=lambda r: (semver.Version.parse(r.version), r.released_at), reverse=True
        )
        self.min_supported = min_supported

    @classmethod
    def load(cls, path: str | None) -> Downloads:
        if path is None:
            return cls([], {})
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"NOME_DOWNLOADS_FILE {path}: {exc}") from None
        issues = [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in Draft202012Validator(_schema()).iter_errors(document)
        ]
        if issues:
            raise ManifestError(f"NOME_DOWNLOADS_FILE {path}: {'; '.join(issues[:10])}")
        return cls(
            msgspec.convert(document["releases"], list[Release]),
            document.get("min_supported", {}),
        )

    def listed(self, surface: str | None = None, platform: str | None = None) -> list[Release]:
        return [
            r
            for r in self.releases
            if (surface is None or r.surface == surface)
            and (platform is None or r.platform == platform)
        ]

    def status(self, client: Client) -> ClientStatus:
        """A build that is not a semantic version is neither behind nor unsupported: the
        server cannot tell, so it does not nag (or lock out) a client it cannot place."""
        latest = next((r.version for r in self.releases if r.surface == client.surface), None)
        current = _parse(client.version)
        oldest = self.min_supported.get(client.surface or "")
        return ClientStatus(
            surface=client.surface,
            version=client.version,
            revision=client.revision,
            latest_version=latest,
            update_available=bool(current and latest and current < semver.Version.parse(latest)),
            update_required=bool(current and oldest and current < semver.Version.parse(oldest)),
        )


def _parse(version: str | None) -> semver.Version | None:
    if not version:
        return None
    try:
        return semver.Version.parse(version.removeprefix("v"))
    except ValueError:
        return None
