"""The benchmark still runs end to end: a handful of flows, tiny ceilings, no chart.

Its numbers mean nothing here (the suite loads the machine); only that every flow completes,
with zero errors, and that the result file has what bench/README.md says it has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_bench_runs_a_few_flows_without_errors(infrastructure: tuple[str, str], tmp_path: Path) -> None:
    database_url, amqp_url = infrastructure
    command = [
        sys.executable, "-m", "bench",
        "--database-url", database_url, "--amqp-url", amqp_url,
        "--services", "6", "--concurrency", "3", "--flows", "6", "--warmup", "2",
        "--rates", "4", "--rate-seconds", "1", "--history", "50,200",
        "--ceiling-size", "100", "--settle", "0", "--flow-timeout", "60",
        "--batches", "2", "--batch-size", "3", "--batch-concurrency", "1",
        "--out", str(tmp_path), "--no-chart",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result_file,) = tmp_path.glob("bench-*.json")
    result = json.loads(result_file.read_text())
    assert [r["errors"] for r in result["runs"]] == [0, 0, 0, 0]
    assert sum(r["flows"] for r in result["runs"]) == 6 + 4 + 6 + 4
    assert result["cost_per_flow"]["smtp_emails"] > 0
    assert all(v > 0 for v in result["ceilings_per_second"].values())
    assert result["combined_ceiling_flows_per_second"] > 0
    assert result["batches"]["size"] == 3 and result["batches"]["changes_per_second"] > 0


def test_the_topology_comparison_explains_itself() -> None:
    """`python -m bench.topologies` starts clusters for ten minutes: here only that it loads
    (the servers of tests/own_cluster.py it imports) and says what it does."""
    done = subprocess.run([sys.executable, "-m", "bench.topologies", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--rounds" in done.stdout and "more than one server" in done.stdout


def test_the_scale_check_alternates_runs_on_two_prepared_systems(infrastructure: tuple[str, str], tmp_path: Path) -> None:
    database_url, amqp_url = infrastructure
    command = [
        sys.executable, "-m", "bench.scale",
        "--database-url", database_url, "--amqp-url", amqp_url,
        "--history", "50,200", "--rounds", "2", "--flows", "6", "--concurrency", "3", "--services", "6", "--warmup", "2",
        "--out", str(tmp_path),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    (result_file,) = tmp_path.glob("scale-*.json")
    result = json.loads(result_file.read_text())
    assert [len(v) for v in result["flows_per_second"].values()] == [2, 2], result
    assert result["errors"] == 0 and set(result["median_flows_per_second"]) == {"50", "200"}
    # Exit 0 when the drop is within 10 %, 1 otherwise: a handful of flows says nothing of which.
    assert done.returncode == (0 if result["met"] else 1), done.stdout[-3000:] + done.stderr[-3000:]


def test_the_floor_times_each_operation_a_flow_is_made_of(infrastructure: tuple[str, str], tmp_path: Path) -> None:
    database_url, amqp_url = infrastructure
    out = tmp_path / "floor.json"
    command = [
        sys.executable, "-m", "bench.floor", "--database-url", database_url, "--amqp-url", amqp_url,
        "--count", "80", "--statements", "10", "--published", "2", "--delivered", "1", "--emails", "1", "--calls", "1",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    costs = figures["cpu_seconds_each"]
    assert set(costs) == {"statement", "publish", "delivery", "email", "call"}
    assert all(0 < cost < 0.1 for cost in costs.values()), costs
    expected = sum(costs[name] * figures["per_flow"][name] for name in costs) * 1e3
    assert figures["floor_ms_per_flow"] == pytest.approx(expected)
    assert figures["per_flow"]["statement"] == 10
    assert "floor" in done.stdout
