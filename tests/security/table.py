"""The security suite's record: one row per attack tried against the running services, with what
the system answered and what it changed. Printed at the end of the run and written to
test-artifacts/security.md (docs/security.md keeps a copy of a clean-clone run)."""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = ("attack", "answer", "changed")


@dataclass(frozen=True)
class Tried:
    attack: str
    answer: str
    changed: str = "nothing"


TRIED: list[Tried] = []


def tried(attack: str, answer: str, changed: str = "nothing") -> None:
    """Record an attack once its test has checked the answer and that nothing changed."""
    TRIED.append(Tried(attack, answer, changed))


def as_markdown() -> str:
    rows = [COLUMNS, *((t.attack, t.answer, t.changed) for t in sorted(TRIED, key=lambda t: t.attack))]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(COLUMNS))
    return "\n".join(lines) + "\n"
