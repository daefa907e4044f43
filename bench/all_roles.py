"""Diagnostic: figure 1's load against one `nome serve` running every role (API, projector and
worker share one process and one GIL), read against figure 1 as deployed. It says what the
split deployment of compose.yaml is worth."""

from __future__ import annotations

from bench import thread_create
from bench.context import Bench, Figure


async def measure(bench: Bench) -> list[Figure]:
    bench.phase("diagnostic: starting one all-roles nome serve (api + projector + worker)")
    nome = bench.servers.nome(all_roles=True)
    bench.phase(f"diagnostic: POST /v1/threads, {bench.args.clients} clients, all roles in one")
    window = await thread_create.creations(bench, nome.port)
    bench.servers.stop_nome()
    return [
        Figure(
            "1 thread creations/s: API+projector+worker in one process",
            window.rate,
            "/s",
            "as deployed: API process + projector/worker process /s",
            bench.measured(thread_create.NAME),
        )
    ]
