"""Figure 8: POST /v1/chat whose run calls one tool (math.evaluate) end to end, 16 clients,
read against figure 1's thread creations/s. A tenant of its own: a free-plan tenant has 1,000
credits and every run costs at least one."""

from __future__ import annotations

from bench import thread_create
from bench.client import Response, post_json
from bench.context import Bench, Figure
from bench.load import closed_loop

TOOL_LINE = '/tool math.evaluate {"expression": "6*7"}'


async def measure(bench: Bench) -> list[Figure]:
    clients = bench.args.tool_clients
    bench.phase(f"figure 8: POST /v1/chat with one math.evaluate call, {clients} clients")
    nome = bench.servers.nome()
    request = post_json("/v1/chat", {"input": f"x\n{TOOL_LINE}"}, bench.servers.tenant("tools"))
    incomplete = [0]  # 2xx answers without the tool's result

    def check(response: Response) -> None:
        body = response.body
        if response.status < 300 and not (
            b'"tools_invoked":["math.evaluate"]' in body and b'"status":"completed"' in body
        ):
            incomplete[0] += 1

    runs = await closed_loop(
        nome.port, lambda _: request, clients=clients, window=bench.window(), on_response=check
    )
    bench.phase(f"  {runs.summary('completed runs/s')}, {incomplete[0]} without the tool")
    return [
        Figure(
            "8 chat+tool runs/s vs thread creations/s",
            runs.rate,
            "/s",
            "POST /v1/threads/s (figure 1)",
            bench.measured(thread_create.NAME),
            problem=runs.problem or (f"{incomplete[0]} without the tool" if incomplete[0] else ""),
        )
    ]
