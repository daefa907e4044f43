"""Wires one process: what every role shares (event store, writer, application, Redis, read
models and their queries, the log signal), and one start/stop unit per process role.

- `api`: the HTTP routes and the gateway's admission (principal cache, rate limits);
- `projector`: the runner that keeps the read models;
- `worker`: the run worker, the periodic jobs and the log followers.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from typing import Final, Literal, Protocol, get_args

import structlog

from nome_api.admission import Admission
from nome_api.batching import GetBatcher
from nome_api.downloads import Downloads
from nome_api.executors.builtin import BuiltinExecutor
from nome_api.executors.packages import PackageExecutor, SourceExecutor
from nome_api.jobs.approvals import ExpireApprovals, FinishApprovedCalls
from nome_api.jobs.calls import SettleStartedCalls
from nome_api.jobs.claims import ForgetClaims
from nome_api.jobs.credits import ExpireCredits
from nome_api.jobs.follower import FollowerHost
from nome_api.jobs.host import JobHost
from nome_api.jobs.imports import ImportPackages
from nome_api.keyring import keyring_for
from nome_api.log import Log
from nome_api.settings import Settings
from nome_api.streams import LogSignal, StreamHub
from nome_api.worker.providers import provider_for
from nome_api.worker.runner import RunWorker
from nome_core.application import Actor, Application
from nome_core.clock import Clock, SystemClock
from nome_core.errors import Conflict
from nome_core.runs.context import RunContext
from nome_core.runs.driver import RunDriver
from nome_core.runs.harness import Harness
from nome_core.runs.tools import RunTools
from nome_core.storage import EventStore, GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.values import PLATFORM_TENANT_ID
from projections.engine import ProjectionRunner
from projections.listen import LogListener
from projections.redis_store import connect, connect_async
from projections.registry import Queries, ReadModels

log = structlog.get_logger("nome.runtime")

ProcessRole = Literal["api", "projector", "worker"]
ROLES: Final[tuple[ProcessRole, ...]] = get_args(ProcessRole)


class Unit(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
        # First: a manifest that does not validate stops the process before it opens anything.
        self.downloads = Downloads.load(settings.downloads_file)
        settings.prepare_paths()
        self.store = EventStore(
            settings.database_url, schema=settings.database_schema, create_table=settings.migrate
        )
        self.writer = GroupCommitWriter(self.store)
        self.log = Log(self.store)
        self.read_models = ReadModels(settings.redis_prefix)
        self.redis = connect_async(settings.redis_url)
        self.redis_sync = connect(settings.redis_url)
        self.docs = GetBatcher(self.redis)
        self.queries = Queries(self.read_models, self.redis, self.docs.get)
        self.app = Application(
            self.store,
            self.writer,
            self.clock,
            registry=self.queries.registry,
            executor=SourceExecutor(
                BuiltinExecutor(self.clock, fetch_allow_hosts=settings.fetch_hosts),
                PackageExecutor(
                    # The install as the log has it (the app is made just below).
                    lambda tenant_id, package: self.app.marketplace.get_install(tenant_id, package),
                    lambda: keyring_for(settings),
                    timeout_s=settings.tool_timeout_s,
                    allow_hosts=settings.fetch_hosts,
                ),
            ),
            default_provider=settings.provider,
            approval_ttl_s=settings.approval_ttl_s,
            billing_grace_days=settings.billing_grace_days,
        )
        self.runner = ProjectionRunner(
            self.store, self.redis_sync, self.read_models.all, prefix=settings.redis_prefix
        )
        self.signal = LogSignal()
        self.hub = StreamHub(self.store, self.signal, heartbeat=settings.sse_heartbeat_s)
        self.listener = (
            LogListener(settings.database_url, self.store.channel)
            if self.store.is_postgres
            else None
        )
        self.admission = Admission(self.redis, settings.redis_prefix, limit=settings.rate_limit)
        self.worker = RunWorker(
            RunDriver(
                self.app.runs,
                Harness(
                    provider_for(settings, self.queries.registry),
                    RunTools(self.app.tools),
                    self.clock,
                    context=RunContext(self.app.bus),
                    approval_ttl_s=settings.approval_ttl_s,
                    model_attempts=settings.model_attempts,
                    model_backoff_s=settings.model_backoff_s,
                ),
            ),
            self.redis,
            self.queries.runs,
            prefix=settings.redis_prefix,
            lease_s=settings.run_lease_s,
        )
        self.units: list[Unit] = [
            unit
            for role, unit in (
                ("api", ApiUnit(self)),
                ("projector", ProjectorUnit(self)),
                ("worker", WorkerUnit(self)),
            )
            if role in self.roles
        ]
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self.writer.start()
            self.signal.bind(asyncio.get_running_loop())
            self.wake_on_append(self.signal.poke)
            for unit in self.units:
                await unit.start()
            if self.listener is not None:
                self.listener.start()
            if self.settings.bootstrap_admin_key:
                await self.bootstrap_admin(self.settings.bootstrap_admin_key)
            if self.settings.bootstrap_platform_key:
                await self.bootstrap_platform(self.settings.bootstrap_platform_key)
        except BaseException:
            # A start that fails half way stops what it started: no role is left running
            # in a process that will never serve (nor heed SIGTERM).
            await self.stop()
            raise
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
        for unit in reversed(self.units):
            await unit.stop()
        self.writer.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self.redis_sync.close()
        self.store.close()

    def wake_on_append(self, wake: object) -> None:
        """Call `wake` whenever the log moves: after this process's commits, and on
        Postgres NOTIFY for every other process's."""
        self.writer.on_commit(wake)  # type: ignore[arg-type]
        if self.listener is not None:
            self.listener.subscribe(wake)  # type: ignore[arg-type]

    async def bootstrap_platform(self, raw_key: str) -> None:
        """First start: the platform operator's key, made once (a fixed id, so processes
        starting together make one) and kept: later starts find it made."""
        key_id = str(uuid.uuid5(uuid.UUID(PLATFORM_TENANT_ID), "bootstrap-platform-key"))
        await self.app.keys.create_platform("bootstrap platform", raw_key=raw_key, key_id=key_id)
        log.info("bootstrap_platform_created")

    async def bootstrap_admin(self, raw_key: str) -> None:
        """First start: tenant `default` with this admin key, unless a tenant exists."""
        exists = await asyncio.to_thread(
            self.store.recorder.select_notifications, None, 1, None, ["tenant.created"]
        )
        if exists:
            return
        # Several processes may start at once on an empty database: both steps are made at
        # most once (fixed ids), and whoever comes second finds them made.
        tenant_id = tenant_id_for("default")
        with contextlib.suppress(Conflict):
            await self.app.tenants.create("default")
        await self.app.keys.create(
            Actor(tenant_id),
            "bootstrap admin",
            ["admin"],
            raw_key=raw_key,
            key_id=str(uuid.uuid5(uuid.UUID(tenant_id), "bootstrap-admin-key")),
        )
        log.info("bootstrap_admin_created", tenant="default")


class ApiUnit:
    """The gateway's memory between requests (the routes need nothing started)."""

    def __init__(self, runtime: Runtime) -> None:
        self.admission = runtime.admission

    async def start(self) -> None:
        await self.admission.start()

    async def stop(self) -> None:
        await self.admission.stop()


class ProjectorUnit:
    """The read models, kept by a runner thread woken whenever the log moves."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        self.runtime.wake_on_append(self.runtime.runner.wake)
        self.runtime.runner.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.runtime.runner.stop)


class WorkerUnit:
    """Runs, periodic jobs and log followers."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        queries = runtime.queries
        jobs = [
            ExpireApprovals(runtime.app, queries.approvals),
            ExpireCredits(runtime.app, queries.accounts),
            ForgetClaims(runtime.store),
        ]
        self.jobs = JobHost(runtime.redis, settings.redis_prefix, jobs)
        self.followers = FollowerHost(
            runtime.store,
            runtime.redis,
            settings.redis_prefix,
            runtime.signal,
            [
                FinishApprovedCalls(runtime.app),
                SettleStartedCalls(runtime.app),
                ImportPackages(
                    runtime.app,
                    timeout_s=settings.import_timeout_s,
                    max_repo_bytes=settings.import_max_bytes,
                    allow_hosts=settings.fetch_hosts,
                ),
            ],
        )

    async def start(self) -> None:
        runtime = self.runtime
        if "projector" in runtime.roles:
            # Runs become claimable when the projector has recorded them as runnable: woken
            # by this process's projector when it applied a run's events (not on every
            # append, which would cost a Redis round trip per thread created), by `offer`
            # for runs admitted here, and by its short poll for everything else.
            runtime.runner.on_applied(
                runtime.worker.wake, when=runtime.read_models.runs.may_change_runnable
            )
        await runtime.worker.start()
        await self.jobs.start()
        await self.followers.start()

    async def stop(self) -> None:
        await self.followers.stop()
        await self.jobs.stop()
        await self.runtime.worker.stop()
