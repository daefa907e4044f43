"""The marketplace catalog: each package as GET /v1/marketplace/packages/{name} shows it, the
names of each scope (`public`, or a tenant's own) in name order, and a word-prefix index for
`?q=`; and their queries.

Search is over the words of a package's name and description: each term of `q` must begin a
word of either. Each scope keeps a set per word prefix (up to PREFIX_MAX characters), so a
query intersects a few sets in Redis instead of reading every package; a longer term is
checked against the page's packages themselves.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import semver

from nome_core.events import Event
from nome_core.marketplace.events import (
    InstallFailed,
    PackageInstalled,
    PackageUninstalled,
    VersionPublished,
    Visibility,
)
from nome_core.marketplace.state import PUBLIC, Failure, InstallState, evolve_install
from projections.engine import Projection, View
from projections.paging import decode_cursor, encode_cursor, page_json

PREFIX_MAX = 12
_WORD = re.compile(r"[a-z0-9]+")
NAME_CURSOR = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")


class Source(msgspec.Struct, kw_only=True):
    repo: str
    commit: str


class PackageVersion(msgspec.Struct, kw_only=True):
    version: str
    published_at: str
    source: Source


class PackageView(msgspec.Struct, kw_only=True):
    """The latest version's manifest, with the package's versions and where it came from.
    Install state is the caller's: the route adds it."""

    name: str
    version: str
    description: str
    publisher: str
    homepage: str | None = None
    tools: list[dict[str, object]]
    requires: dict[str, list[str]]
    versions: list[PackageVersion]
    visibility: Visibility
    source: Source
    tool_hashes: dict[str, str]
    published_at: str


_encode = msgspec.json.Encoder().encode
_decode_view = msgspec.json.Decoder(PackageView).decode


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _latest(versions: list[PackageVersion]) -> str:
    """By SemVer precedence: 1.10.0 is newer than 1.9.0, 2.0.0-rc.1 older than 2.0.0."""
    return max(versions, key=lambda v: semver.Version.parse(v.version)).version


class InstalledToolView(msgspec.Struct, kw_only=True):
    name: str
    description: str
    dangerous: bool
    hash: str


class InstallView(msgspec.Struct, kw_only=True):
    """A tenant's install of a package (API.md §6a)."""

    package: str
    version: str
    state: str
    failure: Failure | None
    tools: list[InstalledToolView]
    installed_at: str | None
    updated_at: str


def install_view(state: InstallState) -> InstallView:
    return InstallView(
        package=state.package,
        version=state.version,
        state=state.state,
        failure=state.failure,
        tools=[
            InstalledToolView(
                name=t.name, description=t.description, dangerous=t.dangerous, hash=t.hash
            )
            for t in state.tools
        ],
        installed_at=state.installed_at,
        updated_at=state.updated_at,
    )


_decode_install = msgspec.json.Decoder(InstallState).decode


class MarketplaceProjection(Projection):
    name = "marketplace"
    types = frozenset(
        {
            VersionPublished.type,
            PackageInstalled.type,
            InstallFailed.type,
            PackageUninstalled.type,
        }
    )

    def install(self, tenant_id: str, package: str) -> str:
        """The install's state as the domain folds it."""
        return self.key("install", tenant_id, package)

    def installs(self, tenant_id: str) -> str:
        """The tenant's installed packages, by name."""
        return self.key("installs", tenant_id)

    def package(self, scope: str, name: str) -> str:
        return self.key("package", scope, name)

    def names(self, scope: str) -> str:
        return self.key("names", scope)

    def word_prefix(self, scope: str, prefix: str) -> str:
        return self.key("prefix", scope, prefix)

    def apply(self, event: Event, view: View) -> None:
        data = event.data
        if not isinstance(data, VersionPublished):
            self._install(event, view)
            return
        scope = PUBLIC if data.visibility == "public" else event.tenant_id
        key = self.package(scope, data.name)
        raw = view.get(key)
        known = _decode_view(raw) if raw else None
        source = Source(repo=data.repo, commit=data.commit)
        listed = PackageVersion(version=data.version, published_at=event.at, source=source)
        versions = [*(known.versions if known else []), listed]
        if known is not None and _latest(versions) != data.version:
            view.set(key, _encode(msgspec.structs.replace(known, versions=versions)))
            return
        manifest = data.manifest
        shown = PackageView(
            name=manifest.name,
            version=manifest.version,
            description=manifest.description,
            publisher=manifest.publisher,
            homepage=manifest.homepage,
            tools=msgspec.to_builtins(manifest.tools),
            requires=msgspec.to_builtins(manifest.requires),
            versions=versions,
            visibility=data.visibility,
            source=source,
            tool_hashes=data.tool_hashes,
            published_at=event.at,
        )
        view.set(key, _encode(shown))
        view.zadd(self.names(scope), 0, data.name)
        # The index holds the latest version's words; an older version's stay (a search
        # may then find a package whose newest description no longer says it: harmless).
        for word in words(f"{manifest.name} {manifest.description}"):
            for end in range(1, min(len(word), PREFIX_MAX) + 1):
                view.sadd(self.word_prefix(scope, word[:end]), data.name)

    def _install(self, event: Event, view: View) -> None:
        data: Any = event.data
        key = self.install(event.tenant_id, data.package)
        raw = view.get(key)
        state = evolve_install(_decode_install(raw) if raw else None, event)
        assert state is not None
        view.set(key, msgspec.json.encode(state))
        if state.live:
            view.zadd(self.installs(event.tenant_id), 0, state.package)
        else:
            view.zrem(self.installs(event.tenant_id), state.package)


class MarketplaceQueries:
    def __init__(self, views: MarketplaceProjection, redis: object) -> None:
        self.views = views
        self.redis: Any = redis

    async def package(self, tenant_id: str, name: str) -> PackageView | None:
        """The tenant's own package of that name, else the public one."""
        own, public = await self.redis.mget(
            self.views.package(tenant_id, name), self.views.package(PUBLIC, name)
        )
        raw = own or public
        return _decode_view(raw) if raw else None

    async def install(self, tenant_id: str, package: str) -> InstallState | None:
        raw = await self.redis.get(self.views.install(tenant_id, package))
        return _decode_install(raw) if raw else None

    async def installs(self, tenant_id: str, *, limit: int, cursor: str | None) -> bytes:
        """The tenant's installed packages, by name."""
        after = decode_cursor(cursor, NAME_CURSOR)
        index = self.views.installs(tenant_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
        pipe.zcard(index)
        names, total = await pipe.execute()
        page = [n.decode() for n in names[:limit]]
        keys = [self.views.install(tenant_id, n) for n in page]
        raws = await self.redis.mget(keys) if keys else []
        docs = [_encode(install_view(_decode_install(r))) for r in raws if r is not None]
        more = len(names) > limit and page
        return page_json(docs, encode_cursor(page[-1]) if more else None, total)

    async def search(
        self, tenant_id: str, q: str | None, *, limit: int, cursor: str | None
    ) -> bytes:
        """The packages the tenant sees (public and its own), in name order; with `q`, those
        where each term begins a word of the name or description."""
        after = decode_cursor(cursor, NAME_CURSOR)
        terms = sorted(words(q or ""))
        if terms:
            by_name = await self._found(tenant_id, terms)
            names = sorted(by_name)
            start = next((i for i, n in enumerate(names) if n > after), len(names)) if after else 0
            page, total = names[start : start + limit + 1], len(names)
        else:
            by_name, total = await self._listed(tenant_id, after, limit + 1)
            page = sorted(by_name)[: limit + 1]
        more, page = len(page) > limit, page[:limit]
        keys = [self.views.package(by_name[n], n) for n in page]
        docs = await self.redis.mget(keys) if keys else []
        next_cursor = encode_cursor(page[-1]) if more and page else None
        return page_json([d for d in docs if d is not None], next_cursor, total)

    async def _listed(
        self, tenant_id: str, after: str | None, count: int
    ) -> tuple[dict[str, str], int]:
        """The next `count` names of each scope after the cursor (the page is among them),
        and how many the tenant sees in all."""
        low = f"({after}" if after else "-"
        pipe = self.redis.pipeline(transaction=False)
        for scope in (PUBLIC, tenant_id):
            pipe.zrangebylex(self.views.names(scope), low, "+", start=0, num=count)
        pipe.zcard(self.views.names(PUBLIC))
        pipe.zrange(self.views.names(tenant_id), 0, -1)
        public, own, public_count, all_own = await pipe.execute()
        # A tenant's own package hides the public one of the same name.
        shadowed = await self.redis.zmscore(self.views.names(PUBLIC), all_own) if all_own else []
        total = public_count + sum(1 for score in shadowed if score is None)
        by_name = {n.decode(): PUBLIC for n in public}
        by_name.update({n.decode(): tenant_id for n in own})
        return by_name, total

    async def _found(self, tenant_id: str, terms: list[str]) -> dict[str, str]:
        """Each package matching every term, with the scope it is shown from."""
        pipe = self.redis.pipeline(transaction=False)
        for scope in (PUBLIC, tenant_id):
            pipe.sinter([self.views.word_prefix(scope, t[:PREFIX_MAX]) for t in terms])
        public, own = await pipe.execute()
        by_name = {n.decode(): PUBLIC for n in public}
        by_name.update({n.decode(): tenant_id for n in own})
        long_terms = [t for t in terms if len(t) > PREFIX_MAX]
        if long_terms:
            kept = await self._matching(sorted(by_name), by_name, long_terms)
            by_name = {n: by_name[n] for n in kept}
        return by_name

    async def _matching(
        self, names: list[str], by_name: dict[str, str], terms: list[str]
    ) -> list[str]:
        """Those whose words begin with every term in full (the index went to PREFIX_MAX)."""
        docs = (
            await self.redis.mget([self.views.package(by_name[n], n) for n in names])
            if names
            else []
        )
        kept = []
        for name, raw in zip(names, docs, strict=True):
            if raw is None:
                continue
            view = _decode_view(raw)
            text = words(f"{view.name} {view.description}")
            if all(any(w.startswith(t) for w in text) for t in terms):
                kept.append(name)
        return kept
