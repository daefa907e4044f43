"""`python -m bench [figure ...]` (`make bench`): the figures in the order of FIGURES (or only
the named modules), one progress line per step, then one table and bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from types import ModuleType

from bench import (
    all_roles,
    approvals,
    audit_export,
    chat_first_delta,
    chat_tools,
    fanout,
    marketplace,
    projection_lag,
    rebuild,
    replay,
    runs_one_tenant,
    thread_create,
    thread_get,
    usage,
)
from bench.context import Bench, Figure

# The figures, in the order they run. Order matters where noted; otherwise it only keeps
# figures that share a server together (a server starts at first use and stays up).
FIGURES: list[ModuleType] = [
    thread_create,  # 1; first, so the write figures start on a small log
    thread_get,  # 2; reads the threads figure 1 made
    projection_lag,  # 3
    chat_first_delta,  # 5
    replay,  # 7
    audit_export,  # 10; before any figure makes a tenant of its own
    chat_tools,  # 8
    approvals,  # 9
    fanout,  # 6
    all_roles,  # diagnostic; stops NOME as deployed
    rebuild,  # 4 and a diagnostic; needs every NOME stopped
    # After 4 too (10,000 packages' events); before the figures without a worker, whose
    # waiting runs a worker would then pick up. Serves NOME with file:// imports on.
    marketplace,
    # After 4: their events would change the log it rebuilds. Each serves NOME without a worker.
    runs_one_tenant,
    usage,  # 500,000 events
]
RESULTS = Path(__file__).with_name("results.json")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figures", nargs="*", help="figure modules to run (default: all)")
    add = parser.add_argument
    add("--clients", type=int, default=32, help="concurrent clients (32)")
    add("--seconds", type=float, default=5.0, help="measured seconds per window (5)")
    add("--warmup", type=float, default=1.0, help="warm-up seconds per window (1)")
    add("--lag-rate", type=float, default=500.0, help="paced commands/s of figure 3 (500)")
    add("--rebuild-events", type=int, default=30_000, help="log size to rebuild, at least")
    add("--chats", type=int, default=200, help="sequential chats of figure 5 (200)")
    add("--replay-events", type=int, default=10_000, help="events of figure 7's run (10000)")
    add("--tool-clients", type=int, default=16, help="concurrent chats of figure 8 (16)")
    add("--approvals", type=int, default=50, help="sequential approvals of figure 9 (50)")
    add("--subscribers", type=int, default=200, help="streams of figure 6's run (200)")
    add("--fanout-words", type=int, default=12_000, help="words of figure 6's answer")
    add("--usage-runs", type=int, default=100_000, help="runs in the usage figure's log")
    env = os.environ.get
    add(
        "--database-url",
        default=env("NOME_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    add("--redis-url", default=env("NOME_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return parser.parse_args(argv)


def number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "not measured"
    return f"{value:,.1f} {unit}" if unit == "ms" else f"{value:,.0f}{unit}"


def table(figures: list[Figure]) -> str:
    """Numbered figures in their number's order (diagnostics next to their figure), the rest
    after them in the order they ran."""
    numbered = [(int(m[0]) if (m := re.match(r"\d+", f.name)) else 1000, f) for f in figures]
    rows = [("figure", "value", "baseline", "ratio", "target", "met?")]
    for _, f in sorted(numbered, key=lambda pair: pair[0]):
        met = {None: "", True: "met", False: "not met"}[f.met]
        rows.append(
            (
                f.name,
                number(f.value, f.unit),
                f"{number(f.baseline, f.unit)} ({f.baseline_name})",
                "-" if math.isnan(f.ratio) else f"{f.ratio:.2f}x",
                f.target or "-",
                f"{met} ({f.problem})" if f.problem else met,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def run(bench: Bench, figure: ModuleType) -> list[Figure]:
    """One module's figures: an async `measure` gets an event loop of its own (uvloop, as
    uvicorn uses, when installed), so a plain function may run one itself."""
    result = figure.measure(bench)
    if not inspect.isawaitable(result):
        return list(result)
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return list(runner.run(result))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = {figure.__name__.removeprefix("bench."): figure for figure in FIGURES}
    if unknown := set(args.figures) - names.keys():
        sys.exit(f"no figure module {', '.join(sorted(unknown))}; there are {', '.join(names)}")
    chosen = [figure for name, figure in names.items() if name in args.figures or not args.figures]
    # SIGTERM unwinds like Ctrl-C, so the cleanup below still runs.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    bench = Bench(args)
    load = os.getloadavg()[0]
    bench.phase(f"bench run: schema {bench.schema}, Redis prefix {bench.prefix}")
    bench.phase(f"  load average {load:.2f} on {os.cpu_count()} cores at the start")
    failed = []
    try:
        for figure in chosen:
            try:
                bench.figures += run(bench, figure)
            except Exception:
                # Benchmarks gate nothing: a broken figure is reported, the others still run.
                failed.append(figure.__name__)
                bench.phase(f"{figure.__name__} failed:\n{traceback.format_exc()}")
    finally:
        bench.cleanup()
    bench.phase(f"done; cleaned up schema {bench.schema} and Redis keys {bench.prefix}*")
    print("\n" + table(bench.figures))
    figures = [f._asdict() | {"ratio": f.ratio, "met": f.met} for f in bench.figures]
    RESULTS.write_text(json.dumps({"load": load, "figures": figures, "failed": failed}, indent=2))
    # Exit status says whether every figure ran, never whether a target was met.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
