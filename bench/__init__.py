"""NOME's benchmarks: every figure is printed next to a baseline measured in the same run on the
same machine (raw Postgres, stock eventsourcing, bare Litestar routes), because absolute rates
on a shared 2-core box mean little. Nothing asserts on time: a benchmark is not a test, and a
missed target is printed ("not met"), never an exit status.

`make bench` (`python -m bench [module ...]`) needs PostgreSQL and Redis on 127.0.0.1; a run
uses a schema and a Redis key prefix of its own and drops both at the end.

A new figure is one module here plus one line in FIGURES (bench/__main__.py). The module has

    def measure(bench: Bench) -> list[Figure]    # or async def; bench/context.py

returning plain data, `Figure(name, value, unit, baseline_name, baseline, target, problem)`,
the baseline measured by the module in the same run (or an earlier figure's value, from
`bench.measured(name)`). It prints progress with `bench.phase()`, gets servers from
`bench.servers` (`bare()`, `stock()`, `nome()`, `tenant(name)`), measures with
`bench.window()` and the drivers of bench/load.py, talks to NOME over HTTP (bench/client.py)
and reaches NOME's internals only through bench/internals.py.
"""
