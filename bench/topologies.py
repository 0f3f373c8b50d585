"""`uv run python -m bench.topologies`: what running on more than one server costs, measured.

The closed-loop bench (`python -m bench`, history 1000, no open loop) against servers started
here for each run, the topologies alternated round after round so that the machine's drift
hits them alike:

- one PostgreSQL and one RabbitMQ (the reference);
- PostgreSQL with a synchronous streaming standby (every commit waits for the standby);
- RabbitMQ as three clustered nodes behind HAProxy (every message replicated to a majority).

All of them on this one machine: the replicas' work competes with the services for its cores,
where on separate hosts it would cost network round trips instead. Prints the median flows/s
of each, and its ratio to the reference's; docs/scaling.md quotes a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's own servers (tests/own_cluster.py)

from own_cluster import postgres_pair, rabbit_cluster
from own_nodes import (
    OwnPostgres,
    chown,
    own_rabbit,
    postgres_bin_dir,
    started_in_a_new_directory,
)
from support import free_port


def one_postgres(root: Path) -> OwnPostgres:
    directory = root / "pg"
    directory.mkdir()
    chown(directory, "postgres")
    return OwnPostgres(directory, free_port(), postgres_bin_dir())  # type: ignore[arg-type]


@contextlib.contextmanager
def servers(topology: str) -> Iterator[tuple[str, str]]:
    """(database URL, AMQP URL) of the topology's servers, each started in a directory of its own."""
    make_database = (lambda root: postgres_pair(root, postgres_bin_dir())) if topology == "standby" else one_postgres  # type: ignore[arg-type]
    make_broker = rabbit_cluster if topology == "cluster" else own_rabbit
    with (
        started_in_a_new_directory("contacts-topology-", make_database) as database,  # type: ignore[type-var]
        started_in_a_new_directory("contacts-topology-", make_broker) as broker,  # type: ignore[type-var]
    ):
        yield database.url, broker.url


TOPOLOGIES: dict[str, str] = {
    "one": "one PostgreSQL, one RabbitMQ",
    "standby": "PostgreSQL with a synchronous standby",
    "cluster": "RabbitMQ: three nodes behind HAProxy",
}


def bench_once(topology: str, flows: int, out: Path) -> float:
    """Flows per second of one closed-loop run against the topology's servers."""
    with servers(topology) as (database_url, amqp_url):
        before = set(out.glob("*.json"))
        command = [sys.executable, "-m", "bench", "--database-url", database_url, "--amqp-url", amqp_url]
        command += ["--history", "1000", "--rates", "", "--flows", str(flows), "--no-chart", "--out", str(out)]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        (result,) = set(out.glob("*.json")) - before
        return float(json.loads(result.read_text())["best_flows_per_second"])


def main(argv: list[str] | None = None, say: Callable[[str], None] = print) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(prog="python -m bench.topologies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each topology, alternated (default: 3)")
    parser.add_argument("--flows", type=int, default=400, help="flows per measured run (default: 400)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "topologies", help="where each run's JSON goes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    measured: dict[str, list[float]] = {name: [] for name in TOPOLOGIES}
    for round_ in range(1, args.rounds + 1):
        for name, title in TOPOLOGIES.items():
            measured[name].append(bench_once(name, args.flows, args.out))
            say(f"round {round_}/{args.rounds}  {title:<40} {measured[name][-1]:6.1f} flows/s")
    reference = statistics.median(measured["one"])
    say("\ntopology                                  median flows/s  ratio  runs")
    for name, title in TOPOLOGIES.items():
        median = statistics.median(measured[name])
        runs = ", ".join(f"{v:.1f}" for v in measured[name])
        say(f"{title:<41} {median:14.1f}  {median / reference:5.2f}  {runs}")
    return measured


if __name__ == "__main__":
    main()
