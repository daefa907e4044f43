"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import Iterable

from litestar import Litestar
from litestar.datastructures import State

from nome_api import __version__, openapi, routes
from nome_api.bodies import Request
from nome_api.errors import EXCEPTION_HANDLERS
from nome_api.gateway import gateway
from nome_api.metrics import Metrics
from nome_api.runtime import ROLES, Runtime
from nome_api.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    roles: Iterable[str] = ROLES,
    runtime: Runtime | None = None,
) -> Litestar:
    """An app for these settings. Processes without the `api` role serve only health."""
    runtime = runtime or Runtime(settings or Settings.from_env(), roles)

    async def start(_app: Litestar) -> None:
        await runtime.start()

    async def stop(_app: Litestar) -> None:
        await runtime.stop()

    metrics = Metrics(runtime)
    handlers: list[object] = [*routes.ALWAYS, metrics.route]
    if "api" in runtime.roles:
        handlers += routes.API
    return Litestar(
        route_handlers=handlers,  # type: ignore[arg-type]
        middleware=[gateway(runtime, metrics.observe)],
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[start],
        on_shutdown=[stop],
        state=State({"runtime": runtime}),
        openapi_config=openapi.config("NOME", __version__),
        plugins=[openapi.ContractDocs(), openapi.MsgspecSchemas()],
        request_class=Request,
        request_max_body_size=runtime.settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
