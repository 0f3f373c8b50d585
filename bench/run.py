"""`uv run python -m bench`: complete flows per second and their latency, against this
machine's own ceilings, at two sizes of stored history.

One run:
 1. creates a database, a namespace and a mail sink of its own, starts the three services
    (their console scripts, as the e2e tests do) and seeds accounts and services as messages;
 2. stores the first amount of history (COPY), warms up;
 3. measures the raw ceilings (RabbitMQ round trips, PostgreSQL insert transactions, SMTP
    deliveries) while the services idle;
 4. closed loop: `--concurrency` users each doing complete flows back to back;
 5. open loop: flows started at each of `--rates` per second, for the latency-vs-load chart;
 6. counts what those flows cost (messages, transactions, emails) from the broker-side
    inbox/outbox tables, the mail log and pg_stat_database;
 7. grows the history to the second amount and repeats the closed loop (and the first rate);
 8. prints the summary, writes JSON and a PNG chart under `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
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
from rich.table import Table

from bench import ceilings
from bench.batches import batch_phase
from bench.harness import (
    ROOT,
    SCHEMAS,
    Bench,
    Driver,
    Flow,
    FlowError,
    ProcessMeter,
    concurrently,
    start_bench,
    stop_bench,
)
from bench.history import (
    committed_transactions,
    grow_history,
    message_and_mail_counts,
    scans_between,
    stage_breakdown,
    table_scans,
)

console = Console()

TARGET_FLOWS_PER_SECOND = 50
TARGET_RATIO = 0.5
STEADY_RATE = 10
TARGET_DONE_P99_MS = 100
TARGET_TOKENS_P99_MS = 200
MAX_SCALE_DROP = 0.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Needs PostgreSQL and RabbitMQ (the same ones as the tests: CONTACTS_TEST_DATABASE_URL and "
            "CONTACTS_TEST_AMQP_URL, else the local defaults). Everything it creates is dropped at the end. "
            "Targets on a 2-core machine: >= 50 flows/s, >= 0.5 of the combined ceiling, and at 10 flows/s "
            "p99 last accept->done < 100 ms and submit->token emails < 200 ms."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database-url", default=os.environ.get("CONTACTS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), help="PostgreSQL URL of a role that may create databases")
    parser.add_argument("--amqp-url", default=os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--concurrency", type=int, default=48, help="closed loop: users doing flows back to back (0: no closed loop); 48 gave the most flows/s here (24: 41.5, 48: 44.0, 96: 43.0)")
    parser.add_argument("--flows", type=int, default=600, help="closed loop: flows per measured run")
    parser.add_argument("--rates", "--rate", default="5,10,20,30", help="open loop: flows started per second, comma separated (the chart's x axis); '' for none")
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=30.0,
        help="open loop: seconds at each rate (30 s at 10/s: a p99 over 300 flows, where over 100 it is the maximum)",
    )
    parser.add_argument("--history", default="1000,100000", help="stored requests before the runs, comma separated (the scale check)")
    parser.add_argument("--services", type=int, default=300, help="services the flows change (each flow holds one; the pool bounds concurrency)")
    parser.add_argument("--warmup", type=int, default=40, help="flows before measuring")
    parser.add_argument("--batches", type=int, default=12, help="batch flow: batches measured after the first closed loop (0: none; bench/batches.py)")
    parser.add_argument("--batch-size", type=int, default=30, help="batch flow: services per batch")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="batch flow: agencies submitting batches back to back")
    parser.add_argument("--ceiling-size", type=int, default=4000, help="operations per ceiling measurement")
    parser.add_argument("--settle", type=float, default=11.0, help="seconds to wait before reading PostgreSQL's statistics (idle backends report them within 10 s)")
    parser.add_argument("--flow-timeout", type=float, default=60.0, help="seconds a flow may take before it counts as an error")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON and the chart go")
    parser.add_argument("--env", action="append", default=[], metavar="CONTACTS_X=VALUE", help="extra setting for the services (repeatable)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--auto-explain", action="store_true", help="diagnostics: log the plan of every statement of the services in PostgreSQL's server log")
    args = parser.parse_args(argv)
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    args.history_list = [int(h) for h in args.history.split(",") if h.strip()]
    if not args.history_list:
        parser.error("--history needs at least one size")
    if not args.concurrency and not args.rate_list:
        parser.error("nothing to run: give --concurrency or --rates")
    if args.concurrency > args.services:
        parser.error("--concurrency may not exceed --services (one flow per service at a time)")
    return args


# --- one measured run ------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:  # nearest rank
        return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]

    ms = 1000.0
    return {
        "p50": round(rank(50) * ms, 1),
        "p95": round(rank(95) * ms, 1),
        "p99": round(rank(99) * ms, 1),
        "max": round(ordered[-1] * ms, 1),
        "mean": round(statistics.fmean(ordered) * ms, 1),
    }


@dataclass
class Run:
    name: str
    mode: str
    history: int
    target: float  # concurrency or rate
    flows: list[Flow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    processes: dict[str, Any] = field(default_factory=dict)
    starved: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "history": self.history,
            ("concurrency" if self.mode == "closed" else "rate"): self.target,
            "flows": len(self.flows),
            "seconds": round(self.elapsed, 2),
            "flows_per_second": round(len(self.flows) / self.elapsed, 2) if self.elapsed else 0.0,
            "submit_to_tokens_ms": percentiles([f.submit_to_tokens for f in self.flows]),
            "last_accept_to_done_ms": percentiles([f.accept_to_done for f in self.flows]),
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "flows_waiting_for_a_free_service": self.starved,
            "processes": self.processes,
        }


async def run_flows(bench: Bench, progress: Progress, run: Run, count: int, *, concurrency: int = 0, rate: float = 0.0, timeout: float) -> Run:
    driver = Driver(bench, timeout)
    meter = ProcessMeter(bench.pids)
    task = progress.add_task(run.name, total=count)
    unexpected_before = len(bench.tracker.unexpected)

    async def one() -> None:
        try:
            run.flows.append(await driver.flow())
        except (FlowError, OSError, ValueError, KeyError) as exc:
            run.errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - aiohttp errors and the like count as errors, the run goes on
            run.errors.append(f"{type(exc).__name__}: {exc}")
        progress.advance(task)

    meter.begin()
    started = time.perf_counter()
    try:
        if rate:
            tasks = []
            for k in range(count):
                delay = started + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        else:
            await concurrently(count, concurrency, one)
        run.elapsed = (max(f.finished for f in run.flows) if run.flows else time.perf_counter()) - started
        run.processes = meter.end()
        run.starved = driver.starved
        run.errors += bench.tracker.unexpected[unexpected_before:]
        run.errors += await driver.contacts_mismatches()
    finally:
        await driver.close()
        progress.remove_task(task)
    return run


async def measure_ceilings(args: argparse.Namespace, bench: Bench) -> dict[str, float]:
    console.log("measuring the ceilings")
    return {
        "rabbitmq": await ceilings.rabbitmq_round_trips(args.amqp_url, bench.system.namespace, args.ceiling_size),
        "postgresql": await ceilings.postgres_insert_transactions(args.database_url, args.ceiling_size),
        "smtp": await ceilings.smtp_deliveries(bench.system.sink.smtp_host, bench.system.sink.smtp_port, args.ceiling_size // 2),
    }


# --- the whole benchmark -------------------------------------------------------------------------------


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    extra_env = dict(item.split("=", 1) for item in args.env)
    warm = args.concurrency or max(1, min(8, args.services))
    started_at = datetime.now(UTC)
    load_before = os.getloadavg()
    log_dir = ROOT / "test-artifacts" / "bench"
    runs: list[Run] = []
    result: dict[str, Any] = {
        "date": started_at.isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("database_url", "amqp_url")},
    }
    with console.status("starting the services and seeding them"):
        bench = await start_bench(args.database_url, args.amqp_url, log_dir, args.services, extra_env, auto_explain=args.auto_explain)
    try:
        stats = await bench.connect()
        requests = await bench.connect("requests")
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        with progress:
            first = args.history_list[0]
            with console.status(f"storing {first} past requests"):
                await grow_history(requests, first, [s.name for s in bench.services])
            await run_flows(bench, progress, Run("warm-up", "closed", first, warm), args.warmup, concurrency=warm, timeout=args.flow_timeout)

            # Ceilings while the services idle; it also lets their statistics settle.
            t0 = time.perf_counter()
            measured = await measure_ceilings(args, bench)
            ceilings_by_size = [measured]
            await asyncio.sleep(max(0.0, args.settle - (time.perf_counter() - t0)))
            before = (await committed_transactions(stats), await message_and_mail_counts(stats, bench.system.namespace, SCHEMAS), await table_scans(stats, bench.system.namespace))

            counted = []
            measured_since = datetime.now(UTC)
            if args.concurrency:
                run = await run_flows(bench, progress, Run(f"closed x{args.concurrency} @{first}", "closed", first, args.concurrency), args.flows, concurrency=args.concurrency, timeout=args.flow_timeout)
                runs.append(run)
                counted.append(run)
            for rate in args.rate_list:
                run = await run_flows(bench, progress, Run(f"open {rate:g}/s @{first}", "open", first, rate), max(1, round(rate * args.rate_seconds)), rate=rate, timeout=args.flow_timeout)
                runs.append(run)
                counted.append(run)

            await asyncio.sleep(args.settle)
            after = (await committed_transactions(stats), await message_and_mail_counts(stats, bench.system.namespace, SCHEMAS), await table_scans(stats, bench.system.namespace))
            flows = sum(len(r.flows) for r in counted)
            costs = {
                "rabbitmq": (after[1]["published"] - before[1]["published"]) / max(1, flows),
                "postgresql": (after[0] - before[0] - 4) / max(1, flows),  # 4: our own readings
                "smtp": (after[1]["emails"] - before[1]["emails"]) / max(1, flows),
            }
            consumed = (after[1]["consumed"] - before[1]["consumed"]) / max(1, flows)
            result["scans"] = {str(first): scans_between(before[2], after[2], flows)}
            result["stages_ms"] = await stage_breakdown(stats, bench.system.namespace, measured_since)

            if args.batches:
                single = runs[0].summary()["flows_per_second"] if runs and runs[0].mode == "closed" else 0.0
                with console.status(f"{args.batches} batches of {args.batch_size}, {args.batch_concurrency} at a time"):
                    result["batches"] = await batch_phase(
                        bench,
                        batches=args.batches,
                        size=args.batch_size,
                        concurrency=args.batch_concurrency,
                        timeout=args.flow_timeout,
                        single_flows_per_second=single,
                    )

            for size in args.history_list[1:]:
                with console.status(f"storing {size} past requests"):
                    await grow_history(requests, size, [s.name for s in bench.services])
                await run_flows(bench, progress, Run(f"warm-up @{size}", "closed", size, warm), args.warmup, concurrency=warm, timeout=args.flow_timeout)
                # Ceilings again: other load on the machine may have changed since the first size.
                ceilings_by_size.append(await measure_ceilings(args, bench))
                scans_before = await table_scans(stats, bench.system.namespace)
                scaled_flows = 0
                if args.concurrency:
                    run = await run_flows(bench, progress, Run(f"closed x{args.concurrency} @{size}", "closed", size, args.concurrency), args.flows, concurrency=args.concurrency, timeout=args.flow_timeout)
                    runs.append(run)
                    scaled_flows += len(run.flows)
                if args.rate_list:
                    rate = args.rate_list[0]
                    run = await run_flows(bench, progress, Run(f"open {rate:g}/s @{size}", "open", size, rate), max(1, round(rate * args.rate_seconds)), rate=rate, timeout=args.flow_timeout)
                    runs.append(run)
                    scaled_flows += len(run.flows)
                await asyncio.sleep(args.settle)
                result["scans"][str(size)] = scans_between(scans_before, await table_scans(stats, bench.system.namespace), scaled_flows)
        await stats.close()
        await requests.close()
    finally:
        with console.status("stopping the services, dropping the database"):
            await stop_bench(bench)

    combined = ceilings.combined_ceiling(costs, measured)
    # The scale check compares like with like: the closed loops, else the first open-loop rate.
    closed = [r for r in runs if r.mode == "closed"] or [r for r in runs if r.mode == "open" and r.target == args.rate_list[0]]
    best = max((len(r.flows) / r.elapsed for r in runs if r.elapsed), default=0.0)
    first_closed = closed[0].summary()["flows_per_second"] if closed else 0.0
    last_closed = closed[-1].summary()["flows_per_second"] if closed else 0.0
    combined_by_size = [ceilings.combined_ceiling(costs, c) for c in ceilings_by_size]
    ratios = [r.summary()["flows_per_second"] / c for r, c in zip(closed, combined_by_size, strict=False)]
    result.update(
        {
            "ceilings_per_second": {k: round(v, 1) for k, v in measured.items()},
            "cost_per_flow": {
                "rabbitmq_messages_published": round(costs["rabbitmq"], 2),
                "rabbitmq_messages_consumed": round(consumed, 2),
                "postgresql_transactions_committed": round(costs["postgresql"], 2),
                "smtp_emails": round(costs["smtp"], 2),
                "counted_over_flows": flows,
            },
            "combined_ceiling_flows_per_second": round(combined, 1),
            "best_flows_per_second": round(best, 2),
            "ratio_to_ceiling": round(best / combined, 3) if combined else 0.0,
            "scale": {
                "history": args.history_list,
                "flows_per_second": [r.summary()["flows_per_second"] for r in closed],
                "drop": round(1 - last_closed / first_closed, 3) if first_closed else 0.0,
                # The same flows/s, as a share of the ceilings measured just before each size's run:
                # what remains once the machine's other load (it changes) is taken out.
                "ceilings_per_second": [{k: round(v, 1) for k, v in c.items()} for c in ceilings_by_size],
                "combined_ceiling_flows_per_second": [round(c, 1) for c in combined_by_size],
                "ratio_to_ceiling": [round(r, 3) for r in ratios],
                "drop_relative_to_ceiling": round(1 - ratios[-1] / ratios[0], 3) if len(ratios) > 1 and ratios[0] else 0.0,
            },
            "runs": [r.summary() for r in runs],
            "machine": {**result["machine"], "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        }
    )
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    steady = next((r for r in result["runs"] if r["mode"] == "open" and r["rate"] == STEADY_RATE), None)
    checks = {
        f"flows/s >= {TARGET_FLOWS_PER_SECOND}": result["best_flows_per_second"] >= TARGET_FLOWS_PER_SECOND,
        f"ratio to ceiling >= {TARGET_RATIO}": result["ratio_to_ceiling"] >= TARGET_RATIO,
        "zero errors": all(r["errors"] == 0 for r in result["runs"]),
    }
    if steady:
        checks[f"@{STEADY_RATE}/s accept->done p99 < {TARGET_DONE_P99_MS} ms"] = steady["last_accept_to_done_ms"]["p99"] < TARGET_DONE_P99_MS
        checks[f"@{STEADY_RATE}/s submit->tokens p99 < {TARGET_TOKENS_P99_MS} ms"] = steady["submit_to_tokens_ms"]["p99"] < TARGET_TOKENS_P99_MS
    return checks


# --- output -------------------------------------------------------------------------------------------


def process_cell(process: dict[str, float], run: dict[str, Any]) -> str:
    per_flow = 1000 * process["cpu_seconds"] / run["flows"] if run["flows"] else 0.0
    memory = f" {process['rss_mb']:.0f} MiB" if "rss_mb" in process else ""
    return f"{process['cpu_percent']:.0f}% {per_flow:.1f} ms{memory}"


def print_summary(result: dict[str, Any]) -> None:
    table = Table(title="Complete flows (latencies in ms: p50 / p95 / p99 / max)")
    for column in ("run", "history", "flows", "flows/s", "submit -> token emails", "last accept -> done", "errors"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for r in result["runs"]:
        fmt = lambda p: f"{p['p50']:.0f} / {p['p95']:.0f} / {p['p99']:.0f} / {p['max']:.0f}"
        table.add_row(r["name"], str(r["history"]), str(r["flows"]), f"{r['flows_per_second']:.1f}", fmt(r["submit_to_tokens_ms"]), fmt(r["last_accept_to_done_ms"]), str(r["errors"]))
    console.print(table)

    table = Table(title="CPU (% of one core, ms per flow) and resident memory (MiB) per process, by run")
    table.add_column("run")
    names = [n for n in result["runs"][0]["processes"] if n != "machine"] if result["runs"] else []
    for name in names:
        table.add_column(name.removeprefix("contacts-"), justify="right")
    table.add_column("machine busy %", justify="right")
    for r in result["runs"]:
        p = r["processes"]
        table.add_row(r["name"], *(process_cell(p[n], r) for n in names), f"{p['machine']['cpu_percent']:.0f}% of {p['machine']['cores']}00%")
    console.print(table)

    c, k = result["ceilings_per_second"], result["cost_per_flow"]
    table = Table(title="Ceilings of the parts on this machine")
    for column in ("part", "ceiling /s", "cost per flow", "flows/s it alone allows"):
        table.add_column(column, justify="left" if column == "part" else "right")
    table.add_row("RabbitMQ publish+confirm -> consume+ack", f"{c['rabbitmq']:.0f}", f"{k['rabbitmq_messages_published']:.2f} messages ({k['rabbitmq_messages_consumed']:.2f} consumed)", f"{c['rabbitmq'] / k['rabbitmq_messages_published']:.0f}")
    table.add_row("PostgreSQL single-row insert transactions", f"{c['postgresql']:.0f}", f"{k['postgresql_transactions_committed']:.2f} transactions", f"{c['postgresql'] / k['postgresql_transactions_committed']:.0f}")
    table.add_row("SMTP deliveries to the sink", f"{c['smtp']:.0f}", f"{k['smtp_emails']:.2f} emails", f"{c['smtp'] / k['smtp_emails']:.0f}")
    console.print(table)
    console.print(
        f"combined ceiling 1/Σ(cost/ceiling) = [bold]{result['combined_ceiling_flows_per_second']:.1f}[/] flows/s; "
        f"achieved {result['best_flows_per_second']:.1f} flows/s; ratio [bold]{result['ratio_to_ceiling']:.2f}[/]"
    )
    s = result["scale"]
    console.print(
        f"history: flows/s at {s['history']}: {s['flows_per_second']} (drop {s['drop']:.1%}; ratios to the ceilings measured "
        f"before each {s['ratio_to_ceiling']}). One run after the other, so the host's drift is in it: "
        "`python -m bench.scale` judges the drop, on alternated runs."
    )
    if b := result.get("batches"):
        console.print(
            f"batches of {b['size']} ({b['batches']}, {b['concurrency']} at a time): [bold]{b['changes_per_second']}[/] changes/s, "
            f"against {b['single_flows_per_second']} for single flows in this run (ratio {b['ratio_to_single_flows']}); "
            f"a batch's stages, median ms: {b['stages_ms_median']}, max: {b['stages_ms_max']}"
        )
    for size, tables in result.get("scans", {}).items():
        growing = {t: v for t, v in tables.items() if v["seq_rows_read_per_flow"] > 100}
        console.print(f"sequential scans reading > 100 rows per flow at history {size}: {growing or 'none'}")
    stages = result.get("stages_ms", {})
    if stages:
        console.print("where a flow's time goes (from the services' own timestamps, p50 / p95 ms): " + "; ".join(f"{k} {v.get('p50', 0):.0f} / {v.get('p95', 0):.0f}" for k, v in stages.items()))
    for check, ok in result["targets"].items():
        console.print(f"  {'[green]met[/]' if ok else '[red]NOT met[/]'}  {check}")
    m = result["machine"]
    console.print(f"machine: {m['cores']} cores, load average before {m['load_average_before']}, after {m['load_average_after']}")


def write_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = result["scale"]["history"][0]
    opened = sorted((r for r in result["runs"] if r["history"] == size and r["mode"] == "open" and r["flows"]), key=lambda r: r["rate"])
    closed = [r for r in result["runs"] if r["history"] == size and r["mode"] == "closed" and r["flows"]]
    if not opened and not closed:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True)
    for ax, key, title, target in (
        (axes[0], "submit_to_tokens_ms", "submit → token emails", TARGET_TOKENS_P99_MS),
        (axes[1], "last_accept_to_done_ms", "last accept → done", TARGET_DONE_P99_MS),
    ):
        for p, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
            ax.plot([r["rate"] for r in opened], [r[key][p] for r in opened], style, label=f"{p}, open loop")
        for r in closed:
            ax.scatter([r["flows_per_second"]] * 2, [r[key]["p50"], r[key]["p99"]], marker="x", color="black", zorder=3)
            ax.annotate(f"closed loop x{r['concurrency']}\n(p50, p99)", (r["flows_per_second"], r[key]["p99"]), fontsize=8)
        for r in opened:
            if r["flows_per_second"] < 0.95 * r["rate"]:
                ax.annotate(f"achieved {r['flows_per_second']:.0f}/s", (r["rate"], r[key]["p99"]), fontsize=8)
        ax.axhline(target, color="grey", linestyle=":", label=f"p99 target at {STEADY_RATE}/s")
        ax.set_title(title)
        ax.set_xlabel("offered flows per second (closed loop: achieved)")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Latency against load ({result['date']}, {result['machine']['cores']} cores, {size} stored requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # uvloop, as in the services: the load generator and the sink's arrivals share the machine.
    result = uvloop.run(benchmark(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = result["date"].replace(":", "").replace("+0000", "Z")
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    console.print(f"results: {json_path}")
    if not args.no_chart:
        chart = args.out / "latency-vs-load.png"
        write_chart(result, chart)
        console.print(f"chart: {chart}")
    errors = sum(r["errors"] for r in result["runs"])
    return 1 if errors else 0
