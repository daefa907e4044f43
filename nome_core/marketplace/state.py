"""Imports and packages folded from their events."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from nome_core.events import Event
from nome_core.marketplace.events import (
    ImportFailed,
    ImportFetched,
    ImportPublished,
    ImportRequested,
    ImportValidated,
    InstalledTool,
    InstallFailed,
    PackageInstalled,
    PackageUninstalled,
    VersionPublished,
    Visibility,
)
from nome_core.marketplace.manifest import Issue, Manifest

ImportStatus = Literal["pending", "fetched", "validated", "published", "failed"]
_PACKAGES = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650010")
# The scope of public packages: every tenant sees them.
PUBLIC = "public"


def package_stream_id(scope: str, name: str) -> str:
    """A package's stream: one per name in its scope (`public`, or the owning tenant)."""
    return str(uuid.uuid5(_PACKAGES, f"{scope}/{name}"))


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    issues: list[Issue] = []


class ImportState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    repo: str
    ref: str | None
    visibility: Visibility
    state: ImportStatus
    created_at: str
    updated_at: str
    commit: str | None = None
    manifest: Manifest | None = None
    manifest_hash: str | None = None
    tool_hashes: dict[str, str] = {}
    package: str | None = None
    version: str | None = None
    failure: Failure | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("published", "failed")

    @property
    def scope(self) -> str:
        return PUBLIC if self.visibility == "public" else self.tenant_id


def evolve_import(state: ImportState | None, event: Event) -> ImportState | None:
    match event.data:
        case ImportRequested() as r:
            return ImportState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                repo=r.repo,
                ref=r.ref,
                visibility=r.visibility,
                state="pending",
                created_at=event.at,
                updated_at=event.at,
            )
        case ImportFetched(commit=commit) if state is not None:
            return msgspec.structs.replace(
                state, state="fetched", commit=commit, updated_at=event.at
            )
        case ImportValidated() as v if state is not None:
            return msgspec.structs.replace(
                state,
                state="validated",
                manifest=v.manifest,
                manifest_hash=v.manifest_hash,
                tool_hashes=v.tool_hashes,
                package=v.manifest.name,
                version=v.manifest.version,
                updated_at=event.at,
            )
        case ImportPublished() as p if state is not None:
            return msgspec.structs.replace(
                state, state="published", package=p.package, version=p.version, updated_at=event.at
            )
        case ImportFailed() as f if state is not None:
            failure = Failure(code=f.code, message=f.message, issues=f.issues)
            return msgspec.structs.replace(
                state, state="failed", failure=failure, updated_at=event.at
            )
    return state


class PublishedVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    manifest: Manifest
    manifest_hash: str
    tool_hashes: dict[str, str]
    repo: str
    commit: str
    import_id: str
    published_at: str


class PackageState(msgspec.Struct, frozen=True, kw_only=True):
    """A package's published versions. A public package has no tenant: every tenant loads
    it; a private one is its tenant's alone."""

    id: str
    name: str
    visibility: Visibility
    tenant_id: str | None
    versions: dict[str, PublishedVersion] = {}


def evolve_package(state: PackageState | None, event: Event) -> PackageState | None:
    match event.data:
        case VersionPublished() as v:
            if state is None:
                state = PackageState(
                    id=event.stream_id,
                    name=v.name,
                    visibility=v.visibility,
                    tenant_id=None if v.visibility == "public" else event.tenant_id,
                )
            published = PublishedVersion(
                version=v.version,
                manifest=v.manifest,
                manifest_hash=v.manifest_hash,
                tool_hashes=v.tool_hashes,
                repo=v.repo,
                commit=v.commit,
                import_id=v.import_id,
                published_at=event.at,
            )
            return msgspec.structs.replace(state, versions={**state.versions, v.version: published})
    return state


InstallStatus = Literal["installed", "failed", "uninstalled"]
_INSTALLS = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650011")


def install_stream_id(tenant_id: str, package: str) -> str:
    """A tenant's install of a package: one stream per (tenant, package name), whatever the
    version (an upgrade is in place)."""
    return str(uuid.uuid5(_INSTALLS, f"{tenant_id}/{package}"))


class InstallState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    package: str
    version: str
    state: InstallStatus
    updated_at: str
    # The live install's id (kept by upgrades, new after an uninstall): its signing secret
    # derives from it, so nothing secret is kept in the log.
    install_id: str | None = None
    visibility: Visibility = "tenant"
    tools: list[InstalledTool] = []
    failure: Failure | None = None
    installed_at: str | None = None

    @property
    def live(self) -> bool:
        return self.state == "installed"


def evolve_install(state: InstallState | None, event: Event) -> InstallState | None:
    match event.data:
        case PackageInstalled() as i:
            kept = state is not None and state.live and state.install_id == i.install_id
            return InstallState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                package=i.package,
                version=i.version,
                state="installed",
                updated_at=event.at,
                install_id=i.install_id,
                visibility=i.visibility,
                tools=i.tools,
                installed_at=state.installed_at if kept and state else event.at,
            )
        case InstallFailed() as f:
            failure = Failure(code=f.code, message=f.message)
            if state is not None and state.live:
                # A failed upgrade leaves the installed version in place.
                return msgspec.structs.replace(state, failure=failure, updated_at=event.at)
            return InstallState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                package=f.package,
                version=f.version,
                state="failed",
                updated_at=event.at,
                failure=failure,
            )
        case PackageUninstalled() if state is not None:
            return msgspec.structs.replace(
                state, state="uninstalled", tools=[], install_id=None, updated_at=event.at
            )
    return state
