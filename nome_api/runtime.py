"""Wires one process: event store, writer, application, Redis, projector, per role."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable

import structlog

from nome_api.admission import Admission
from nome_api.batching import GetBatcher
from nome_api.settings import Settings
from nome_api.streams import LogSignal, StreamHub
from nome_api.worker.providers import provider_for
from nome_api.worker.runner import RunWorker
from nome_api.worker.sweeper import Sweeper
from nome_api.worker.tools import ToolRunner
from nome_core.application import Actor, Application
from nome_core.clock import Clock, SystemClock
from nome_core.errors import Conflict
from nome_core.eventstore import EventStore
from nome_core.keys import secrets as key_secrets
from nome_core.runs.harness import Harness
from nome_core.tenants.state import tenant_id_for
from nome_core.tools.registry import ToolRegistry
from nome_core.writer import GroupCommitWriter
from projections.engine import ProjectionRunner
from projections.listen import LogListener
from projections.redis_store import connect, connect_async
from projections.registry import ReadModels

log = structlog.get_logger("nome.runtime")

ROLES = ("api", "projector", "worker")


class Runtime:
    """Everything one NOME process runs; `roles` says which parts."""

    def __init__(
        self,
        settings: Settings,
        roles: Iterable[str] = ROLES,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.roles = frozenset(roles)
        self.clock = clock or SystemClock()
        settings.prepare_paths()
        self.store = EventStore(
            settings.database_url, schema=settings.database_schema, create_table=settings.migrate
        )
        self.writer = GroupCommitWriter(self.store)
        self.app = Application(self.store, self.writer, self.clock)
        self.read_models = ReadModels(settings.redis_prefix)
        self.redis = connect_async(settings.redis_url)
        self.docs = GetBatcher(self.redis)
        self.redis_sync = connect(settings.redis_url)
        self.runner = ProjectionRunner(
            self.store, self.redis_sync, self.read_models.all, prefix=settings.redis_prefix
        )
        self.listener = (
            LogListener(settings.database_url, self.store.channel)
            if self.store.is_postgres
            else None
        )
        self.signal = LogSignal()
        self.hub = StreamHub(self.store, self.signal, heartbeat=settings.sse_heartbeat_s)
        self.registry = ToolRegistry()
        self.tools = ToolRunner(
            self.clock,
            self.app.policy,
            self.registry,
            fetch_allow_hosts=frozenset(
                h.strip() for h in settings.fetch_allow_hosts.split(",") if h.strip()
            ),
        )
        self.worker = RunWorker(
            self.app,
            self.redis,
            self.read_models.runs,
            Harness(
                provider_for(settings, self.registry),
                self.tools,
                self.clock,
                approval_ttl_s=settings.approval_ttl_s,
            ),
            self.clock,
            prefix=settings.redis_prefix,
            lease_s=settings.run_lease_s,
        )
        self.admission = Admission(self.redis, settings.redis_prefix, limit=settings.rate_limit)
        self.sweeper = Sweeper(self.app, self.tools, self.redis, self.read_models.approvals)
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.writer.start()
        self.signal.bind(asyncio.get_running_loop())
        if "api" in self.roles:
            await self.admission.start()
        wakers = [self.signal.poke]
        if "projector" in self.roles:
            wakers.append(self.runner.wake)
            self.runner.start()
        if "worker" in self.roles:
            # Runs become claimable when the projector has recorded them as runnable: woken
            # by this process's projector when it applied a run's events (not on every
            # append, which would cost a Redis round trip per thread created), by `offer`
            # for runs admitted here, and by its short poll for everything else.
            self.runner.on_applied(self.worker.wake, when=self.read_models.runs.may_change_runnable)
            await self.worker.start()
            await self.sweeper.start()
        for wake in wakers:
            self.writer.on_commit(wake)
            if self.listener is not None:
                self.listener.subscribe(wake)
        if self.listener is not None:
            self.listener.start()
        if self.settings.bootstrap_admin_key:
            await self.bootstrap_admin(self.settings.bootstrap_admin_key)
        log.info(
            "runtime_started",
            roles=sorted(self.roles),
            database=self.store.url.split("@")[-1],
            redis=self.settings.redis_url.split("@")[-1],
        )

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.listener is not None:
            self.listener.stop()
        if "api" in self.roles:
            await self.admission.stop()
        if "worker" in self.roles:
            await self.sweeper.stop()
            await self.worker.stop()
        if "projector" in self.roles:
            await asyncio.to_thread(self.runner.stop)
        self.writer.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self.redis_sync.close()
        self.store.close()

    async def bootstrap_admin(self, raw_key: str) -> None:
        """First start: tenant `default` with this admin key, unless a tenant exists."""
        if not key_secrets.is_well_formed(raw_key):
            raise ValueError("NOME_BOOTSTRAP_ADMIN_KEY must look like nome_sk_ + 43 url-safe chars")
        exists = await asyncio.to_thread(
            self.store.recorder.select_notifications, None, 1, None, ["tenant.created"]
        )
        if exists:
            return
        # Several processes may start at once on an empty database: both steps are made at
        # most once (fixed ids), and whoever comes second finds them made.
        tenant_id = tenant_id_for("default")
        with contextlib.suppress(Conflict):
            await self.app.create_tenant("default")
        await self.app.create_key(
            Actor(tenant_id),
            "bootstrap admin",
            ["admin"],
            raw_key=raw_key,
            key_id=str(uuid.uuid5(uuid.UUID(tenant_id), "bootstrap-admin-key")),
        )
        log.info("bootstrap_admin_created", tenant="default")
