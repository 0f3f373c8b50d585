"""`uv run python -m bench.scale`: does a long history slow the system down? Judged so that the
host's drift cannot hide a slowdown (issue 21).

Two systems are prepared side by side before anything is measured, each on a database of its
own: one holding the small history, the other the large one (`--history`, 1,000 and 100,000
stored requests). Then short closed-loop runs alternate between them, round after round
(`--rounds`), so that whatever the machine does meanwhile falls on both alike; the drop is judged
on the medians of their flows/s, and must stay within 10 %. No correction by a measure of the
host's speed: the bench's own CPU per flow, used for that before, rises with a slower system too,
so it was not independent of what it corrected.

While one system runs, the other idles (its timers wake once a second); both are started the
same way, so that costs both the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from bench.harness import ROOT, Bench, start_bench, stop_bench
from bench.history import grow_history
from bench.run import MAX_SCALE_DROP, Run, run_flows

console = Console()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTACTS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--amqp-url", default=os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--history", default="1000,100000", help="the two history sizes compared, small first")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each size, alternated")
    parser.add_argument("--flows", type=int, default=300, help="flows per run")
    parser.add_argument("--concurrency", type=int, default=48, help="users doing flows back to back")
    parser.add_argument("--services", type=int, default=300, help="services of each system")
    parser.add_argument("--warmup", type=int, default=40, help="flows on each system before the rounds")
    parser.add_argument("--flow-timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale", help="where the JSON goes")
    args = parser.parse_args(argv)
    args.sizes = [int(h) for h in args.history.split(",") if h.strip()]
    if len(args.sizes) != 2:
        parser.error("--history takes two sizes")
    if args.concurrency > args.services:
        parser.error("--concurrency may not exceed --services")
    return args


async def prepared(args: argparse.Namespace, size: int) -> Bench:
    """A system of its own, on a database of its own holding `size` past requests."""
    with console.status(f"starting a system and storing {size} past requests"):
        bench = await start_bench(args.database_url, args.amqp_url, ROOT / "test-artifacts" / f"bench-scale-{size}", args.services, {})
        conn = await bench.connect("requests")
        try:
            await grow_history(conn, size, [s.name for s in bench.services])
        finally:
            await conn.close()
    return bench


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    small, large = args.sizes
    started = datetime.now(UTC)
    benches = {small: await prepared(args, small), large: await prepared(args, large)}
    measured: dict[int, list[float]] = {small: [], large: []}
    errors = 0
    try:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        with progress:
            for size, bench in benches.items():
                await run_flows(bench, progress, Run(f"warm-up @{size}", "closed", size, args.concurrency), args.warmup, concurrency=args.concurrency, timeout=args.flow_timeout)
            for round_ in range(1, args.rounds + 1):
                for size, bench in benches.items():
                    name = f"round {round_}/{args.rounds} @{size}"
                    run = await run_flows(bench, progress, Run(name, "closed", size, args.concurrency), args.flows, concurrency=args.concurrency, timeout=args.flow_timeout)
                    measured[size].append(run.summary()["flows_per_second"])
                    errors += len(run.errors)
                    console.log(f"{name}: {measured[size][-1]:.1f} flows/s")
    finally:
        with console.status("stopping the systems, dropping their databases"):
            await asyncio.gather(*(stop_bench(b) for b in benches.values()))
    medians = {size: statistics.median(values) for size, values in measured.items()}
    drop = 1 - medians[large] / medians[small] if medians[small] else 0.0
    return {
        "date": started.isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("database_url", "amqp_url")},
        "flows_per_second": {str(size): values for size, values in measured.items()},
        "median_flows_per_second": {str(size): round(m, 2) for size, m in medians.items()},
        "drop": round(drop, 3),
        "errors": errors,
        "met": drop <= MAX_SCALE_DROP and errors == 0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = uvloop.run(compare(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{result['date'].replace(':', '')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    small, large = (str(s) for s in args.sizes)
    console.print(
        f"flows/s, alternated: @{small} {result['flows_per_second'][small]}, @{large} {result['flows_per_second'][large]}\n"
        f"medians: {result['median_flows_per_second'][small]} and {result['median_flows_per_second'][large]}: "
        f"drop [bold]{result['drop']:.1%}[/] ({'[green]met[/]' if result['met'] else '[red]NOT met[/]'}: at most {MAX_SCALE_DROP:.0%}, no errors; "
        f"{result['errors']} errors)\n{path}"
    )
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
