"""Marketplace commands: a tenant's import request, and each step the import follower
records."""

from __future__ import annotations

from nome_core.bus import Command
from nome_core.marketplace.events import FailureCode, Visibility
from nome_core.marketplace.manifest import Issue, Manifest


class RequestImport(Command, frozen=True, kw_only=True):
    import_id: str
    repo: str
    ref: str | None
    visibility: Visibility


class RecordFetch(Command, frozen=True, kw_only=True):
    import_id: str
    commit: str


class RecordValidation(Command, frozen=True, kw_only=True):
    import_id: str
    manifest: Manifest


class FailImport(Command, frozen=True, kw_only=True):
    import_id: str
    code: FailureCode
    message: str
    issues: list[Issue] = []


class PublishImport(Command, frozen=True, kw_only=True):
    """The validated import's version, published in its package (or refused there)."""

    import_id: str


ImportStep = RecordFetch | RecordValidation | FailImport


class InstallPackage(Command, frozen=True, kw_only=True):
    """Install (or upgrade to) a version, the latest when none is named. For a package with
    MCP tools, what the servers answered was fetched before the command: each tool's hash
    as its server defines it, or why a server could not be asked."""

    package: str
    version: str | None
    install_id: str
    served_hashes: dict[str, str] = {}
    unreachable: str | None = None


class UninstallPackage(Command, frozen=True, kw_only=True):
    package: str
