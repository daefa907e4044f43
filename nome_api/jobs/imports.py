"""Package imports, performed by the worker (API.md §6a): each `import.requested` is fetched
with real git, its manifest validated and its version published, each step an event of the
import's stream.

A follower does them one at a time, each within its time and size limits, so a hanging or
huge repository holds up later imports for at most `timeout_s` and nothing else: runs and
jobs do not wait on it. Steps are recorded only while they are the import's next one, so a
worker that crashed midway and does an import again records nothing twice; an import
already fetched is read again at its pinned commit, never at the ref.
"""

from __future__ import annotations

import asyncio

import structlog

from nome_api import git
from nome_core.application import Application
from nome_core.bus import Actor
from nome_core.events import Event, Meta
from nome_core.marketplace import manifest
from nome_core.marketplace.commands import (
    FailImport,
    PublishImport,
    RecordFetch,
    RecordValidation,
)
from nome_core.marketplace.events import ImportRequested
from nome_core.marketplace.state import ImportState

log = structlog.get_logger("nome.imports")
MANIFEST = "nome-package.json"


class ImportPackages:
    name = "import-packages"
    types = frozenset({ImportRequested.type})

    def __init__(
        self,
        app: Application,
        *,
        timeout_s: float,
        max_repo_bytes: int,
        allow_hosts: frozenset[str],
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_repo_bytes = max_repo_bytes
        self.allow_hosts = allow_hosts

    async def handle(self, event: Event) -> float | None:
        actor = Actor(event.tenant_id, Meta(principal="system:imports"))
        state = await self._state(event)
        if state is None or state.ended:
            return None
        if state.state in ("pending", "fetched"):
            state = await self._fetch_and_validate(actor, state)
        if state is not None and state.state == "validated":
            state = await self.app.marketplace.publish(actor, PublishImport(import_id=state.id))
        log.info(
            "import_ended",
            import_id=event.stream_id,
            state=state.state if state else None,
            failure=state.failure.code if state and state.failure else None,
        )
        return None

    async def _state(self, event: Event) -> ImportState | None:
        return await asyncio.to_thread(
            self.app.marketplace.get_import, event.tenant_id, event.stream_id
        )

    async def _fetch_and_validate(self, actor: Actor, state: ImportState) -> ImportState | None:
        record = self.app.marketplace.record
        try:
            fetched = await git.fetch_file(
                state.repo,
                state.commit or state.ref,
                MANIFEST,
                timeout_s=self.timeout_s,
                max_bytes=manifest.MAX_BYTES,
                max_repo_bytes=self.max_repo_bytes,
                allow_hosts=self.allow_hosts,
            )
        except git.GitFailure as failure:
            return await record(
                actor, FailImport(import_id=state.id, code=failure.code, message=failure.message)
            )
        state = await record(actor, RecordFetch(import_id=state.id, commit=fetched.commit))
        if state is None or state.ended:
            return state
        try:
            parsed = manifest.parse(fetched.content)
        except manifest.TooLarge as exc:
            return await record(
                actor, FailImport(import_id=state.id, code="too_large", message=str(exc))
            )
        except manifest.ManifestInvalid as exc:
            return await record(
                actor,
                FailImport(
                    import_id=state.id,
                    code="manifest_invalid",
                    message=f"{MANIFEST} is not a valid package manifest",
                    issues=exc.issues,
                ),
            )
        return await record(actor, RecordValidation(import_id=state.id, manifest=parsed))
