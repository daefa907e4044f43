"""The `nome` command: serve, migrate, keys, projections (API.md §9)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import structlog

from nome_api.logging import configure
from nome_api.runtime import ROLES, Runtime
from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.keys.roles import ROLES as KEY_ROLES
from nome_core.tenants.state import tenant_id_for

log = structlog.get_logger("nome.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nome", description="NOME agent backend")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (all roles unless --role)")
    serve.add_argument(
        "--role", choices=ROLES, action="append", help="run only this role; repeat for several"
    )

    commands.add_parser("migrate", help="create the event store tables once")

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="print a new key on the last line")
    create.add_argument("--tenant", required=True, help="tenant name (created if new)")
    create.add_argument("--role", choices=KEY_ROLES, action="append", required=True)
    create.add_argument("--name", default="cli")

    projections = commands.add_parser("projections", help="read models").add_subparsers(
        dest="action", required=True
    )
    rebuild = projections.add_parser("rebuild", help="rebuild read models from the log")
    rebuild.add_argument("name", nargs="?", help="one projection (default: all)")

    replay = commands.add_parser("replay", help="print a run's events (NDJSON envelopes)")
    replay.add_argument("run_id")

    _audit_parser(commands)

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure(settings.log_format, settings.log_level)
    if args.command == "serve":
        return _serve(settings, args.role or list(ROLES))
    if args.command == "migrate":
        runtime_store(settings).close()
        log.info("migrated", database=settings.database_url.split("@")[-1])
        return 0
    if args.command == "keys":
        return asyncio.run(_create_key(settings, args.tenant, args.role, args.name))
    if args.command == "projections":
        return _rebuild(settings, args.name)
    if args.command == "replay":
        return _replay(settings, args.run_id)
    if args.command == "audit":
        if args.action == "export":
            return _audit_export(settings, args)
        return _audit_verify(args.file, partial=args.partial)
    return 2


def runtime_store(settings: Settings):  # type: ignore[no-untyped-def]
    from nome_core.eventstore import EventStore

    settings.prepare_paths()
    return EventStore(settings.database_url, schema=settings.database_schema)


def _serve(settings: Settings, roles: list[str]) -> int:
    import gc

    import uvicorn

    from nome_api.app import create_app

    app = create_app(settings, roles=roles)
    # The writer and projector threads wait on I/O and then queue for the GIL behind the event
    # loop; a shorter switch interval gets them back sooner (measured: a 16-event commit went
    # from 56 ms to 7 ms under load). Long-lived objects made at start-up are frozen out of
    # the collector and full collections made rarer: they stalled requests 50-77 ms.
    sys.setswitchinterval(0.0005)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


async def _create_key(settings: Settings, tenant: str, roles: list[str], name: str) -> int:
    runtime = Runtime(settings, roles=())
    runtime.writer.start()
    try:
        tenant_id = tenant_id_for(tenant)
        if runtime.app.tenant(tenant_id) is None:
            await runtime.app.create_tenant(tenant)
        outcome, raw = await runtime.app.create_key(Actor(tenant_id), name, roles)
        assert outcome.state is not None
        print(f"tenant {tenant} ({tenant_id}) key {outcome.state.id} roles {','.join(roles)}")
        print(raw)
    finally:
        runtime.writer.stop()
        runtime.store.close()
    return 0


def _rebuild(settings: Settings, name: str | None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    runtime = Runtime(settings, roles=())
    selected = [p for p in runtime.read_models.all if name in (None, p.name)]
    if not selected:
        print(f"no projection named {name!r}", file=sys.stderr)
        return 2
    runner = runtime.runner
    runner.projections = selected
    for projection in selected:
        runner.request_rebuild(projection.name)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("rebuilding " + ", ".join(p.name for p in selected), total=None)

        def report(position: int, head: int) -> None:
            progress.update(task, completed=position, total=head)

        runner.catch_up(report)
    for projection in selected:
        runner._release(projection.name)
    runtime.redis_sync.close()
    runtime.store.close()
    log.info("rebuilt", projections=[p.name for p in selected], events=runner.applied_events)
    return 0


def _replay(settings: Settings, run_id: str) -> int:
    from uuid import UUID

    from nome_core.eventstore import row_envelope

    try:
        UUID(run_id)
    except ValueError:
        print(f"not a run id: {run_id}", file=sys.stderr)
        return 2
    store = runtime_store(settings)
    try:
        rows = store.stream_rows(run_id)
        if not rows or rows[0].type != "run.created":
            print(f"no such run: {run_id}", file=sys.stderr)
            return 1
        out = sys.stdout.buffer
        for row in rows:
            out.write(row_envelope(row) + b"\n")
        out.flush()
    finally:
        store.close()
    return 0


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="export and verify the hash-chained log")
    actions = audit.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write a tenant's events as NDJSON envelopes")
    export.add_argument("--out", required=True, help="file to write (appears only when complete)")
    tenant = export.add_mutually_exclusive_group()
    tenant.add_argument("--tenant", help="tenant name (default: default)")
    tenant.add_argument("--tenant-id", help="tenant id")
    export.add_argument("--after", type=int, help="only events after this position")
    export.add_argument("--until", type=int, help="only events up to this position")
    export.add_argument("--stream-id", help="only this stream's events")
    export.add_argument("--types", help="only these event types (comma-separated)")
    verify = actions.add_parser("verify", help="check an export's hash chains (offline)")
    verify.add_argument("file")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="the export was filtered by --after or --types: streams may start mid-chain",
    )


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    import os
    from uuid import UUID

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from nome_api.errors import ApiError
    from nome_api.routes.audit import export_filter, export_pages, pinned

    try:
        flt = export_filter(args.after, args.until, args.stream_id, args.types)
        tenant_id = str(UUID(args.tenant_id)) if args.tenant_id else None
    except ApiError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except ValueError:
        print("--tenant-id must be a UUID", file=sys.stderr)
        return 2
    tenant_id = tenant_id or tenant_id_for(args.tenant or "default")
    store = runtime_store(settings)
    partial = args.out + ".partial"
    events = 0
    try:
        if not store.stream_rows(tenant_id):
            print(f"no such tenant: {args.tenant or tenant_id}", file=sys.stderr)
            return 1
        flt = pinned(flt, store.head())
        assert flt.until is not None
        # Written aside and renamed at the end: a cut-short export must not pass for a
        # complete one (its chains would verify; they would just end early).
        with (
            open(partial, "wb") as out,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            ) as progress,
        ):
            span = max(0, flt.until - flt.after)
            task = progress.add_task("exporting positions", total=span)
            for page in export_pages(store, tenant_id, flt):
                out.write(page.chunk)
                events += page.events
                progress.update(task, completed=min(span, page.last - flt.after))
            progress.update(task, completed=span)
        os.replace(partial, args.out)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    finally:
        store.close()
    print(
        f"exported {events} events of tenant {tenant_id} "
        f"(positions {flt.after + 1}..{flt.until}) to {args.out}"
    )
    if flt.after or flt.types:
        print("filtered by position or type: check it with `nome audit verify --partial`")
    return 0


def _audit_verify(path: str, *, partial: bool) -> int:
    """Offline: needs the file only, no server and no database."""
    from nome_core.audit import ChainVerifier

    verifier = ChainVerifier(partial=partial)
    try:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                verifier.feed_line(line, line=number)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    for p in verifier.problems:
        seq = "?" if p.seq is None else p.seq
        print(f"{path}:{p.line}: stream {p.stream_id or '?'} seq {seq}: {p.reason}")
    hidden = verifier.problem_count - len(verifier.problems)
    if hidden:
        print(f"... and {hidden} more problems")
    counts = f"{verifier.events_checked} events in {verifier.streams_checked} streams"
    if verifier.ok:
        print(f"ok: {counts}, every hash chain intact")
        return 0
    print(f"FAILED: {verifier.problem_count} problems in {counts}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
