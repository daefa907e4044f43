"""Marketplace decisions: who may import where, each step of an import recorded once, and
a version published once with one content."""

from __future__ import annotations

import semver

from nome_core.accounts.decide import free_quota, may_start_work, take_quota
from nome_core.accounts.errors import EntitlementRequired
from nome_core.accounts.state import QuotaState
from nome_core.events import DomainEvent
from nome_core.marketplace.commands import (
    FailImport,
    ImportStep,
    InstallPackage,
    RecordFetch,
    RecordValidation,
    RequestImport,
)
from nome_core.marketplace.errors import NotInstalled, PackageNotFound, VersionNotFound
from nome_core.marketplace.events import (
    ImportFailed,
    ImportFetched,
    ImportPublished,
    ImportRequested,
    ImportValidated,
    InstalledTool,
    InstallFailed,
    InstallFailure,
    PackageInstalled,
    PackageUninstalled,
    VersionPublished,
)
from nome_core.marketplace.manifest import manifest_hash, tool_hash
from nome_core.marketplace.state import (
    ImportState,
    InstallState,
    PackageState,
    PublishedVersion,
)
from nome_core.tenants.plans import plan_of
from nome_core.tenants.state import TenantState


def request(
    cmd: RequestImport, tenant: TenantState | None, *, now: str, grace_days: float
) -> list[DomainEvent]:
    """A tenant's own (private) packages need `private_packages`; a public import is the
    platform's (the route checks its key) and needs no entitlement of a tenant."""
    if cmd.visibility == "tenant":
        may_start_work(tenant, now, grace_days)
        if tenant is None or "private_packages" not in tenant.entitlements:
            raise EntitlementRequired(["private_packages"])
    return [ImportRequested(repo=cmd.repo, ref=cmd.ref, visibility=cmd.visibility)]


def step(cmd: ImportStep, state: ImportState | None) -> list[DomainEvent]:
    """One step of the import, if it is still the import's next one: the follower that
    performs them may do one again after a crash, and only the first is recorded."""
    if state is None or state.ended:
        return []
    match cmd:
        case RecordFetch(commit=commit) if state.state == "pending":
            return [ImportFetched(commit=commit)]
        case RecordValidation(manifest=manifest) if state.state == "fetched":
            hashes = {tool.name: tool_hash(tool) for tool in manifest.tools}
            return [
                ImportValidated(
                    manifest=manifest, manifest_hash=manifest_hash(manifest), tool_hashes=hashes
                )
            ]
        case FailImport() as f:
            return [ImportFailed(code=f.code, message=f.message, issues=f.issues)]
    return []


def publish(
    state: ImportState | None, package: PackageState | None
) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """The import's events and the package's. A version is immutable: the same name and
    version again with the same content is the same publication; with other content it is
    refused."""
    if state is None or state.state != "validated":
        return [], []
    assert state.manifest is not None and state.manifest_hash is not None
    assert state.commit is not None
    manifest = state.manifest
    done = ImportPublished(package=manifest.name, version=manifest.version)
    known = package.versions.get(manifest.version) if package is not None else None
    if known is not None:
        if known.manifest_hash == state.manifest_hash:
            return [done], []
        message = (
            f"{manifest.name} {manifest.version} is published already with other content: "
            "a version is immutable, publish a new one"
        )
        return [ImportFailed(code="version_exists", message=message)], []
    published = VersionPublished(
        name=manifest.name,
        version=manifest.version,
        visibility=state.visibility,
        manifest=manifest,
        manifest_hash=state.manifest_hash,
        tool_hashes=state.tool_hashes,
        repo=state.repo,
        commit=state.commit,
        import_id=state.id,
    )
    return [done], [published]


def latest(package: PackageState) -> str:
    """The newest version by SemVer precedence (1.10.0 after 1.9.0; 2.0.0-rc.1 before 2.0.0)."""
    return max(package.versions, key=semver.Version.parse)


def version_to_install(cmd: InstallPackage, package: PackageState | None) -> PublishedVersion:
    if package is None:
        raise PackageNotFound()
    published = package.versions.get(cmd.version or latest(package))
    if published is None:
        raise VersionNotFound()
    return published


def install(
    cmd: InstallPackage,
    current: InstallState | None,
    package: PackageState | None,
    tenant: TenantState | None,
    quota: QuotaState | None,
    *,
    now: str,
    grace_days: float,
) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """The install's events and the quota's. Refused (nothing appended) without the
    entitlements the package needs or over `max_installs`; failed (an event) when a required
    connector is missing or an MCP server's tools are not the ones published."""
    published = version_to_install(cmd, package)
    assert package is not None
    manifest = published.manifest
    may_start_work(tenant, now, grace_days)
    needed: set[str] = {"marketplace", *manifest.requires.entitlements}
    if package.visibility == "tenant":
        needed.add("private_packages")
    missing = sorted(needed - set(tenant.entitlements if tenant else ()))
    if missing:
        raise EntitlementRequired(missing)
    live = current is not None and current.live
    if live and current is not None and current.version == published.version:
        return [], []  # installed already: the same install
    failure = _failure(cmd, published)
    if failure is not None:
        code, message = failure
        failed = InstallFailed(
            package=manifest.name, version=manifest.version, code=code, message=message
        )
        return [failed], []
    taken: list[DomainEvent] = []
    if not live:
        limit = (tenant.limits if tenant else plan_of("free").limits).max_installs
        taken = take_quota(quota, limit, resource="installs", item_id=manifest.name)
    tools = [
        InstalledTool(
            name=f"{manifest.name}.{tool.name}",
            description=tool.description,
            input_schema=tool.input_schema,
            dangerous=tool.dangerous,
            endpoint=tool.endpoint,
            hash=published.tool_hashes[tool.name],
        )
        for tool in manifest.tools
    ]
    install_id = current.install_id if live and current is not None else cmd.install_id
    assert install_id is not None
    installed = PackageInstalled(
        package=manifest.name,
        version=manifest.version,
        visibility=package.visibility,
        install_id=install_id,
        tools=tools,
    )
    return [installed], taken


def _failure(cmd: InstallPackage, published: PublishedVersion) -> tuple[InstallFailure, str] | None:
    manifest = published.manifest
    if manifest.requires.connectors:
        # Connectors are set up per tenant (API.md §7); none is set up here yet.
        needed = ", ".join(manifest.requires.connectors)
        return "connector_missing", f"the package needs these connectors set up first: {needed}"
    served = [t for t in manifest.tools if t.endpoint.type == "mcp"]
    if served and cmd.unreachable is not None:
        return "server_unreachable", cmd.unreachable
    hashes = published.tool_hashes
    changed = [t.name for t in served if cmd.served_hashes.get(t.name) != hashes[t.name]]
    if changed:
        return (
            "tool_mismatch",
            f"the MCP server defines {', '.join(changed)} otherwise than the published package",
        )
    return None


def uninstall(current: InstallState | None) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """The install's events and the quota's: its place under `max_installs` is freed."""
    if current is None or not current.live:
        raise NotInstalled()
    freed = free_quota("installs", [current.package])
    return [PackageUninstalled(package=current.package)], [*freed]
