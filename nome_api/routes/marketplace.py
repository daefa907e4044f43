"""The marketplace (API.md §6a): imports of packages from git and the catalog.

An import is accepted at once (202) and performed by a worker; its state moves on in
GET /v1/marketplace/imports/{id}. A tenant's admin imports the tenant's own packages; the
platform key imports public ones, which every tenant sees.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api import git
from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    actor_of,
    caller_of,
    json_bytes,
    runtime_of,
)
from nome_api.errors import ApiError, Issue
from nome_api.executors import mcp
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.keyring import keyring_for
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import PageOf, Strict
from nome_core.bus import Claim, Claimed
from nome_core.marketplace.commands import InstallPackage, RequestImport, UninstallPackage
from nome_core.marketplace.decide import version_to_install
from nome_core.marketplace.errors import VersionNotFound
from nome_core.marketplace.manifest import tool_hash
from nome_core.marketplace.state import (
    Failure,
    ImportState,
    InstallState,
    evolve_import,
    evolve_install,
)
from nome_core.tools.executor import ToolFailed
from nome_core.values import PLATFORM_ROLE
from projections.marketplace import InstallView, PackageView, install_view

_encode = msgspec.json.Encoder().encode
# A git ref as `git check-ref-format` allows, or a commit: no spaces, controls or `..`.
_REF = r"^(?!-)(?!.*\.\.)[^\s\x00-\x1f\x7f~^:?*\[\\]{1,255}$"


class ImportBody(Strict):
    repo: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    ref: Annotated[str, msgspec.Meta(pattern=_REF)] | None = None
    # Absent: the tenant's own for a tenant's admin, public for the platform key.
    visibility: Literal["tenant", "public"] | None = None


class ImportView(msgspec.Struct, kw_only=True):
    id: str
    repo: str
    ref: str | None
    commit: str | None
    state: str
    package: str | None
    version: str | None
    failure: Failure | None
    visibility: str
    created_at: str
    updated_at: str


class PackageDetail(PackageView, kw_only=True):
    installed: bool
    install_state: str | None


def _import(state: ImportState) -> bytes:
    return _encode(
        ImportView(
            id=state.id,
            repo=state.repo,
            ref=state.ref,
            commit=state.commit,
            state=state.state,
            package=state.package,
            version=state.version,
            failure=state.failure,
            visibility=state.visibility,
            created_at=state.created_at,
            updated_at=state.updated_at,
        )
    )


def _repo(repo: str, *, file_urls: bool) -> str:
    """The repository as NOME fetches it; never one with credentials in it, which would
    be kept in the log."""
    try:
        parts = urlsplit(repo)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        issues = [Issue(path=["repo"], message="not a URL")]
        raise ApiError(422, "not a repository NOME can import", issues=issues) from None
    if parts.username or parts.password:
        raise ApiError(
            422,
            "credentials in a repository URL are not accepted",
            issues=[Issue(path=["repo"], message="remove the user and password")],
        )
    try:
        normalised = git.normalise(repo)
    except ValueError as exc:
        raise ApiError(
            422, "not a repository NOME can import", issues=[Issue(path=["repo"], message=str(exc))]
        ) from None
    if normalised.startswith("file:") and not file_urls:
        issues = [Issue(path=["repo"], message="file:// imports are off (NOME_IMPORT_FILE_URLS)")]
        raise ApiError(422, "this deployment imports from the network only", issues=issues)
    return normalised


@post(
    "/imports",
    status_code=202,
    summary="Import a package from a git repository",
    opt={"roles": ("admin", PLATFORM_ROLE), **IDEMPOTENT},
    responses=errors(402, 422),
)
async def create_import(request: Req, data: JSONBody[ImportBody]) -> Response[ImportView]:
    platform = caller_of(request).can(PLATFORM_ROLE)
    visibility = data.visibility or ("public" if platform else "tenant")
    if visibility == "public" and not platform:
        raise ApiError(403, "a public package is imported with the platform key")
    if visibility == "tenant" and platform:
        issues = [Issue(path=["visibility"], message="the platform key imports public packages")]
        raise ApiError(422, "the platform has no packages of its own", issues=issues)
    repo = _repo(data.repo, file_urls=runtime_of(request).settings.import_file_urls)

    async def run(claim: Claim | None) -> Response[Any]:
        runtime = runtime_of(request)
        cmd = RequestImport(
            import_id=runtime.app.new_id(), repo=repo, ref=data.ref, visibility=visibility
        )
        made = await runtime.app.marketplace.request_import(actor_of(request), cmd, claim=claim)
        return json_bytes(_import(made.state), status=202, position=made.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve_import)
        return json_bytes(_import(state), status=202, position=position)

    return await idempotent(request, run, replay)


@get(
    "/imports/{import_id:str}",
    summary="Get an import",
    opt={"roles": ("viewer", PLATFORM_ROLE)},
    responses=errors(404),
)
async def get_import(request: Req, import_id: FromPath[str]) -> Response[ImportView]:
    runtime = runtime_of(request)
    import_id = checked_id(import_id, "import")
    tenant = caller_of(request).tenant_id
    state = await runtime.log.call(runtime.app.marketplace.get_import, tenant, import_id)
    if state is None:
        raise ApiError(404, "no such import")
    return json_bytes(_import(state))


@get(
    "/packages",
    summary="The catalog: public packages and the tenant's own, by name",
    opt={"roles": ("viewer", PLATFORM_ROLE)},
)
async def list_packages(
    request: Req,
    q: Annotated[
        str | None,
        QueryParameter(description="words that begin words of the name or description"),
    ] = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Response[PageOf[PackageView]]:
    if q is not None and len(q) > 200:
        raise ApiError(400, "q is at most 200 characters")
    queries = runtime_of(request).queries.marketplace
    tenant = caller_of(request).tenant_id
    return json_bytes(await queries.search(tenant, q, limit=limit, cursor=cursor))


@get(
    "/packages/{name:str}",
    summary="Get a package",
    opt={"roles": ("viewer", PLATFORM_ROLE)},
    responses=errors(404),
)
async def get_package(request: Req, name: FromPath[str]) -> Response[PackageDetail]:
    queries = runtime_of(request).queries.marketplace
    found = await queries.package(caller_of(request).tenant_id, name)
    if found is None:
        raise ApiError(404, "no such package")
    install = await queries.install(caller_of(request).tenant_id, name)
    detail = PackageDetail(
        **msgspec.structs.asdict(found),
        installed=install is not None and install.live,
        install_state=install.state if install is not None else None,
    )
    return json_bytes(_encode(detail))


_PACKAGE_NAME = r"^[a-z0-9][a-z0-9-]{1,62}$"


class InstallBody(Strict):
    package: Annotated[str, msgspec.Meta(pattern=_PACKAGE_NAME)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class InstallAnswer(InstallView, kw_only=True, omit_defaults=True):
    """The install as POST answers it: with the secret its HTTP tools' calls are signed
    with, which no other answer shows."""

    signing_secret: str | None = None


def _answer(request: Req, state: InstallState) -> bytes:
    view = install_view(state)
    secret = None
    signed = any(t.endpoint.type == "http" for t in state.tools)
    if state.live and signed and state.install_id is not None:
        secret = keyring_for(runtime_of(request).settings).signing_secret(state.install_id)
    return _encode(InstallAnswer(**msgspec.structs.asdict(view), signing_secret=secret))


async def _served_hashes(
    request: Req, package: str, version: str | None
) -> tuple[dict[str, str], str | None]:
    """What the package's MCP servers define now, as tool hashes, or why they could not be
    asked: the install compares them with the published ones."""
    runtime = runtime_of(request)
    tenant = caller_of(request).tenant_id
    found = await runtime.log.call(runtime.app.marketplace.get_package, tenant, package)
    if found is None:
        return {}, None  # the command says there is no such package
    try:
        published = version_to_install(
            InstallPackage(package=package, version=version, install_id=""), found
        )
    except VersionNotFound:
        return {}, None
    served = [t for t in published.manifest.tools if t.endpoint.type == "mcp"]
    settings = runtime.settings
    listed: dict[str, list[mcp.McpTool]] = {}
    hashes: dict[str, str] = {}
    try:
        for url in sorted({t.endpoint.url for t in served}):
            listed[url] = await mcp.list_tools(
                url, timeout_s=settings.tool_timeout_s, allow_hosts=settings.fetch_hosts
            )
    except ToolFailed as exc:  # BackendUnreachable too
        return {}, f"the package's MCP server could not be asked for its tools: {exc}"
    for tool in served:
        name = tool.endpoint.tool or tool.name
        match = next((m for m in listed[tool.endpoint.url] if m.name == name), None)
        if match is not None:
            as_served = msgspec.structs.replace(
                tool, description=match.description, input_schema=match.input_schema
            )
            hashes[tool.name] = tool_hash(as_served)
    return hashes, None


@post(
    "/installs",
    status_code=201,
    summary="Install a package, or upgrade it in place",
    opt={"role": "admin", **IDEMPOTENT},
    responses=errors(402, 404, 422),
)
async def install_package(request: Req, data: JSONBody[InstallBody]) -> Response[InstallAnswer]:
    async def run(claim: Claim | None) -> Response[Any]:
        runtime = runtime_of(request)
        served, unreachable = await _served_hashes(request, data.package, data.version)
        cmd = InstallPackage(
            package=data.package,
            version=data.version,
            install_id=runtime.app.new_id(),
            served_hashes=served,
            unreachable=unreachable,
        )
        done = await runtime.app.marketplace.install(actor_of(request), cmd, claim=claim)
        return json_bytes(_answer(request, done.state), status=201, position=done.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve_install)
        return json_bytes(_answer(request, state), status=201, position=position)

    return await idempotent(request, run, replay)


@get("/installs", summary="The tenant's installed packages, by name")
async def list_installs(
    request: Req, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[InstallView]]:
    queries = runtime_of(request).queries.marketplace
    tenant = caller_of(request).tenant_id
    return json_bytes(await queries.installs(tenant, limit=limit, cursor=cursor))


@delete(
    "/installs/{package:str}",
    status_code=204,
    summary="Uninstall a package: its tools' calls from then on get tool_uninstalled",
    opt={"role": "admin"},
    responses=errors(404),
)
async def uninstall_package(request: Req, package: FromPath[str]) -> Response[None]:
    runtime = runtime_of(request)
    if not re.fullmatch(_PACKAGE_NAME, package):
        raise ApiError(404, "the package is not installed")
    await runtime.app.marketplace.uninstall(actor_of(request), UninstallPackage(package=package))
    return Response(
        None, status_code=204, headers={"X-Nome-Position": str(await runtime.log.head())}
    )


router = Router(
    path="/v1/marketplace",
    route_handlers=[
        create_import,
        get_import,
        list_packages,
        get_package,
        install_package,
        list_installs,
        uninstall_package,
    ],
    tags=["marketplace"],
)
