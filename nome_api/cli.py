"""The `nome` command: serve, migrate, keys, projections (API.md §9)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys
from collections.abc import Sequence

import msgspec
import structlog
from eventsourcing.persistence import PersistenceError

from nome_api.downloads import ManifestError
from nome_api.logging import configure
from nome_api.runtime import ROLES, Runtime
from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.tenants.state import tenant_id_for
from nome_core.values import ROLES as KEY_ROLES

log = structlog.get_logger("nome.cli")


def main(argv: Sequence[str] | None = None) -> int:
    # A crash in a C extension (SIGSEGV, SIGABRT) prints every thread's Python stack to
    # stderr before the process dies, instead of nothing.
    faulthandler.enable()
    parser = argparse.ArgumentParser(prog="nome", description="NOME agent backend")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (all roles unless --role)")
    serve.add_argument(
        "--role", choices=ROLES, action="append", help="run only this role; repeat for several"
    )

    commands.add_parser("migrate", help="create the event store tables once")

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="print a new key on the last line")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", help="tenant name (created if new)")
    owner.add_argument(
        "--platform", action="store_true", help="a key of the deployment's operator (API.md §6)"
    )
    create.add_argument("--role", choices=KEY_ROLES, action="append")
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
    if args.command == "audit" and args.action == "verify":
        # Offline: an auditor has the file and the public key, not the deployment's settings.
        return _audit_verify(args)
    try:
        settings = Settings.from_env()
    except (ValueError, msgspec.ValidationError) as exc:
        # Before anything starts: a wrong setting is a clear line and exit status 2.
        print(f"nome: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    if args.command == "serve":
        try:
            return _serve(settings, args.role or list(ROLES))
        except PersistenceError as exc:
            print(f"nome: cannot reach the event store: {exc}", file=sys.stderr)
            return 1
        except ManifestError as exc:
            print(f"nome: configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "migrate":
        runtime_store(settings).close()
        log.info("migrated", database=settings.database_url.split("@")[-1])
        return 0
    if args.command == "keys":
        if args.platform:
            if args.role:
                print("nome: a platform key has the platform role only", file=sys.stderr)
                return 2
            return asyncio.run(_create_platform_key(settings, args.name))
        if not args.role:
            print("nome: give a tenant key at least one --role", file=sys.stderr)
            return 2
        return asyncio.run(_create_key(settings, args.tenant, args.role, args.name))
    if args.command == "projections":
        return _rebuild(settings, args.name)
    if args.command == "replay":
        return _replay(settings, args.run_id)
    if args.command == "audit":
        return _audit_export(settings, args)
    return 2


def runtime_store(settings: Settings):  # type: ignore[no-untyped-def]
    from nome_core.storage.store import EventStore

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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # SIGTERM: stop accepting, give open requests (and SSE streams) a few seconds, then
        # stop every role anyway.
        timeout_graceful_shutdown=5,
    )
    hub = app.state["runtime"].hub

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Streams never end on their own: end them, or shutdown waits them out.
            hub.close()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = Server(config)
    server.run()
    # A start-up that failed (uvicorn logged why) must not look like a clean exit.
    return 0 if server.started else 1


async def _create_key(settings: Settings, tenant: str, roles: list[str], name: str) -> int:
    runtime = Runtime(settings, roles=())
    runtime.writer.start()
    try:
        tenant_id = tenant_id_for(tenant)
        if runtime.app.tenants.named(tenant) is None:
            await runtime.app.tenants.create(tenant)
        outcome, raw = await runtime.app.keys.create(Actor(tenant_id), name, roles)
        assert outcome.state is not None
        print(f"tenant {tenant} ({tenant_id}) key {outcome.state.id} roles {','.join(roles)}")
        print(raw)
    finally:
        runtime.writer.stop()
        runtime.store.close()
    return 0


async def _create_platform_key(settings: Settings, name: str) -> int:
    runtime = Runtime(settings, roles=())
    runtime.writer.start()
    try:
        outcome, raw = await runtime.app.keys.create_platform(name)
        assert outcome.state is not None
        print(f"platform key {outcome.state.id}")
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
    head = runtime.store.head()
    for projection in selected:
        runner._release(projection.name)
    runtime.redis_sync.close()
    runtime.store.close()
    names = ", ".join(p.name for p in selected)
    # A running projector that holds a read model's lease rebuilds it itself; this process
    # then applied fewer events (or none) and waited for it.
    print(f"rebuilt {names} up to position {head}: {runner.applied_events} events applied here")
    return 0


def _replay(settings: Settings, run_id: str) -> int:
    from uuid import UUID

    from nome_core.storage.rows import row_envelope

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
    verify = actions.add_parser(
        "verify", help="check an export's hash chains and signed checkpoint (offline)"
    )
    verify.add_argument("file")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="the export was filtered by --after or --types: streams may start mid-chain",
    )
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="the deployment's public key (GET /v1/audit/public-key): its base64, or a file "
        "holding it or that route's JSON; without it the checkpoint's signature is not checked",
    )


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    import os
    from uuid import UUID

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from nome_api.errors import ApiError
    from nome_api.keyring import keyring_for
    from nome_api.routes.audit import export_filter, export_pages, pinned
    from nome_core.audit import key_id

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
    try:
        signer = keyring_for(settings).audit_signing_key
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
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
            for page in export_pages(store, tenant_id, flt, signer=signer):
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
    print(f"closed by a checkpoint signed with key {key_id(signer.public_key())}")
    print(
        f"exported {events} events of tenant {tenant_id} "
        f"(positions {flt.after + 1}..{flt.until}) to {args.out}"
    )
    if flt.after or flt.types:
        print("filtered by position or type: check it with `nome audit verify --partial`")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    """Offline: needs the file and the public key only, no settings, server or database.

    Exit 0 when every chain is intact and the checkpoint records exactly what the file
    holds; without --public-key that is said on stderr to exclude the signature. 1 when
    anything is wrong (a missing checkpoint always is), 2 when the file or key can't be read.
    """
    import os

    from nome_core.audit import ExportVerifier, load_public_key

    path: str = args.file
    public_key = None
    if args.public_key is not None:
        try:
            text = args.public_key
            if os.path.isfile(text):
                with open(text) as held:
                    text = held.read()
            public_key = load_public_key(text)
        except OSError as exc:
            print(f"cannot read {args.public_key}: {exc.strerror}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"--public-key: {exc}", file=sys.stderr)
            return 2
    verifier = ExportVerifier(partial=args.partial, public_key=public_key)
    try:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                verifier.feed_line(line, line=number)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    verifier.finish()
    for p in verifier.problems:
        where = path if p.line is None else f"{path}:{p.line}"
        if p.checkpoint:
            print(f"{where}: {p.reason}")
            continue
        seq = "?" if p.seq is None else p.seq
        print(f"{where}: stream {p.stream_id or '?'} seq {seq}: {p.reason}")
    hidden = verifier.problem_count - len(verifier.problems)
    if hidden:
        print(f"... and {hidden} more problems")
    chains, checkpoint = verifier.chains, verifier.checkpoint
    counts = f"{chains.events_checked} events in {chains.streams_checked} streams"
    if not verifier.ok:
        scope = checkpoint.filter if checkpoint is not None else None
        if scope is not None and not args.partial and (scope.after or scope.types is not None):
            print(
                "the checkpoint says the export is filtered by position or type: "
                "verify it with --partial"
            )
        print(f"FAILED: {verifier.problem_count} problems in {counts}")
        return 1
    assert checkpoint is not None, "a missing checkpoint is a problem"
    if public_key is None:
        print(
            "the checkpoint matches the file, but its signature was NOT checked: pass "
            "--public-key (GET /v1/audit/public-key) to know that the deployment wrote it "
            "and nothing was cut from the end",
            file=sys.stderr,
        )
    else:
        scope = checkpoint.filter
        print(
            f"checkpoint signed by key {verifier.signed_by}: the file holds all it records "
            f"(tenant {checkpoint.tenant_id}, positions {scope.after + 1}..{scope.until})"
        )
    print(f"ok: {counts}, every hash chain intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
