"""Marketplace events: an import's life on its own stream, and each version a package
publishes on the package's stream (API.md §6a)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nome_core.events import DomainEvent, event_type
from nome_core.marketplace.manifest import Endpoint, Issue, Manifest

Visibility = Literal["public", "tenant"]
FailureCode = Literal[
    "repo_unreachable",
    "ref_not_found",
    "manifest_missing",
    "manifest_invalid",
    "version_exists",
    "too_large",
]


@event_type("import.requested")
class ImportRequested(DomainEvent, frozen=True, kw_only=True):
    # The repository as given (normalised), never with credentials: a URL's userinfo is
    # refused by the route, so nothing secret reaches the log.
    repo: str
    ref: str | None
    visibility: Visibility


@event_type("import.fetched")
class ImportFetched(DomainEvent, frozen=True, kw_only=True):
    """The ref resolved to this commit, once: the import never follows the ref again."""

    commit: str


@event_type("import.validated")
class ImportValidated(DomainEvent, frozen=True, kw_only=True):
    manifest: Manifest
    manifest_hash: str
    tool_hashes: dict[str, str]


@event_type("import.published")
class ImportPublished(DomainEvent, frozen=True, kw_only=True):
    package: str
    version: str


@event_type("import.failed")
class ImportFailed(DomainEvent, frozen=True, kw_only=True):
    code: FailureCode
    message: str
    issues: list[Issue] = []


@event_type("package.version_published")
class VersionPublished(DomainEvent, frozen=True, kw_only=True):
    """A version of the package, immutable from here on."""

    name: str
    version: str
    visibility: Visibility
    manifest: Manifest
    manifest_hash: str
    tool_hashes: dict[str, str]
    repo: str
    commit: str
    import_id: str


class InstalledTool(msgspec.Struct, frozen=True, kw_only=True):
    """A package tool as a tenant calls it: `<package>.<tool>`, its contract and endpoint,
    and its definition's hash (what an MCP server must still match)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    dangerous: bool
    endpoint: Endpoint
    hash: str


InstallFailure = Literal["connector_missing", "tool_mismatch", "server_unreachable"]


@event_type("package.installed")
class PackageInstalled(DomainEvent, frozen=True, kw_only=True):
    """Installed, or upgraded in place: the install keeps its id (and so the signing secret
    derived from it) across versions."""

    package: str
    version: str
    visibility: Visibility
    install_id: str
    tools: list[InstalledTool]


@event_type("package.install_failed")
class InstallFailed(DomainEvent, frozen=True, kw_only=True):
    package: str
    version: str
    code: InstallFailure
    message: str


@event_type("package.uninstalled")
class PackageUninstalled(DomainEvent, frozen=True, kw_only=True):
    package: str
