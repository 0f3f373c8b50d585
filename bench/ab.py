"""A/B in one sitting: closed-loop runs of several checkouts' benchmarks, alternated round after
round (A B C, C B A, ...) so that the host's drift falls on all alike, then the medians.

    uv run python -m bench.ab /path/to/worktree-of-the-commit-before .   # 3 rounds by default

Each checkout runs its own `python -m bench` from its own `.venv` (make one with `git worktree
add` and `uv sync` in it); the JSON of every run goes to `<temporary directory>/contacts-bench-ab/`.
With `--floor`, each round also runs `python -m bench.floor` (the services' CPU per flow with
the libraries alone), in turn with the checkouts, so that it can be set against them round by round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = Path("floor")  # stands for `python -m bench.floor` among the checkouts

PROCESSES = {"requests": "contacts-requests", "billing": "contacts-billing-check", "notifier": "contacts-notifier", "bench": "bench", "pg": "postgresql", "rmq": "rabbitmq"}


def run_once(checkout: Path, flows: int, out: Path) -> dict[str, float]:
    """One closed-loop run of `checkout`'s benchmark; CPU per flow (ms) of each process and the costs."""
    python = str(checkout / ".venv" / "bin" / "python")
    args = [python, "-m", "bench", "--history", "1000", "--rates", "", "--flows", str(flows), "--no-chart", "--out", str(out)]
    if "--batches" in subprocess.run([python, "-m", "bench", "--help"], cwd=checkout, capture_output=True, text=True, check=True).stdout:
        args += ["--batches", "0"]  # older benches had no batch flow
    subprocess.run(args, cwd=checkout, capture_output=True, text=True, check=True)
    result = json.loads(max(out.glob("bench-*.json"), key=lambda p: p.stat().st_mtime).read_text())
    run, costs = result["runs"][0], result["cost_per_flow"]
    ms = {name: 1000 * run["processes"][process]["cpu_seconds"] / run["flows"] for name, process in PROCESSES.items()}
    return {
        "flows/s": run["flows_per_second"],
        "services": ms["requests"] + ms["billing"] + ms["notifier"],
        **ms,
        "transactions": costs["postgresql_transactions_committed"],
        "messages": costs["rabbitmq_messages_published"],
        "ratio": result["ratio_to_ceiling"],
    }


def floor_once(out: Path) -> dict[str, float]:
    """This checkout's `python -m bench.floor`: what the services' CPU per flow cannot go below."""
    figures = out / "floor.json"
    subprocess.run([sys.executable, "-m", "bench.floor", "--out", str(figures)], cwd=ROOT, capture_output=True, text=True, check=True)
    return {"services": json.loads(figures.read_text())["floor_ms_per_flow"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path, help="the checkouts to compare (worktrees with a .venv)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each checkout")
    parser.add_argument("--flows", type=int, default=400, help="closed-loop flows per run (x48 users, history 1,000)")
    parser.add_argument("--floor", action="store_true", help="also run python -m bench.floor each round")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkouts] + ([FLOOR] if args.floor else [])
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    for round_ in range(args.rounds):
        for checkout in checkouts if round_ % 2 == 0 else checkouts[::-1]:
            out = Path(tempfile.gettempdir()) / "contacts-bench-ab" / checkout.name
            out.mkdir(parents=True, exist_ok=True)
            result = floor_once(out) if checkout is FLOOR else run_once(checkout, args.flows, out)
            results[checkout].append(result)
            print(time.strftime("%H:%M:%S"), checkout.name, "  ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
    print("medians:")
    for checkout, runs in results.items():
        print(f"  {checkout.name}:", "  ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in runs[0]))


if __name__ == "__main__":
    main()
