"""Every third-party package the code imports is declared by the project that imports it, not
just reached through another package's dependencies (aio-pika arrived only through FastStream
once): a library that drops a dependency must not break us."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_MEMBERS = [ROOT / "shared", *sorted((ROOT / "services").glob("*/")), ROOT / "tools"]
# What the tests and the benchmark import may come from the dev group or any member.
TOOLING = [ROOT / "tests", ROOT / "bench", *(m / "tests" for m in WORKSPACE_MEMBERS)]


def requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.split(r"[\s\[<>=~!;]", r, maxsplit=1)[0]) for r in requirements}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(project: Path) -> set[str]:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    names = requirement_names(data.get("project", {}).get("dependencies", []))
    for group in data.get("dependency-groups", {}).values():
        names |= requirement_names([r for r in group if isinstance(r, str)])
    return names


def imported_distributions(folders: list[Path]) -> dict[str, set[str]]:
    """Distribution -> the files importing it, for third-party top-level modules."""
    by_module = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in [folder] if folder.is_file() else folder.rglob("*.py"):
            if ".venv" in path.parts or "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top.startswith("contacts_"):
                        continue
                    for dist in by_module.get(top, [top]):
                        found.setdefault(_normalise(dist), set()).add(path.name)
    return found


def _local_modules() -> set[str]:
    """Modules of the tests' own (tests/ is on the path: support, capture, seed, ...)."""
    names = {p.stem for folder in TOOLING if folder.exists() for p in folder.rglob("*.py")}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()}  # faults, security, …
    return {_normalise(n) for n in names | folders} | {"bench", "conftest"}


@pytest.mark.parametrize("member", WORKSPACE_MEMBERS, ids=lambda p: p.name)
def test_each_member_declares_what_its_code_imports(member: Path) -> None:
    undeclared = {
        dist: files
        for dist, files in imported_distributions([member / "src"]).items()
        if dist not in declared(member)
    }
    assert not undeclared, f"{member.name}/pyproject.toml does not declare: {undeclared}"


def test_tests_and_bench_declare_what_they_import() -> None:
    available = declared(ROOT).union(*(declared(m) for m in WORKSPACE_MEMBERS))
    undeclared = {
        dist: files
        for dist, files in imported_distributions([f for f in TOOLING if f.exists()] + [ROOT / "conftest.py"]).items()
        if dist not in available and dist not in _local_modules()
    }
    assert not undeclared, f"the root pyproject's dev group does not declare: {undeclared}"


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("import aio_pika\nfrom faststream.rabbit import RabbitBroker\n")
    assert set(imported_distributions([tmp_path])) == {"aio-pika", "faststream"}


SERVICE_PACKAGES = ["contacts-requests", "contacts-billing-check", "contacts-notifier"]


def _uv() -> str:
    # `uv run` names itself in UV; a bare pytest finds it on the PATH or where its installer puts it.
    return os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")


@pytest.mark.parametrize("package", SERVICE_PACKAGES)
def test_service_images_install_no_tools(package: str) -> None:
    """What a service image installs (`uv sync --package`, as its Dockerfile does): the service
    and the service library, never the tools or what only they need (the mail sink's SMTP
    server, the YAML writer, the management API's client)."""
    exported = subprocess.run(
        [_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--package", package],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    lines = [line for line in exported.splitlines() if line and not line.startswith(("#", " "))]
    members = {line.removeprefix("-e ./") for line in lines if line.startswith("-e ")}
    installed = {_normalise(re.split(r"[=\s;]", line, maxsplit=1)[0]) for line in lines if not line.startswith("-e ")}
    assert members == {"shared", f"services/{package.removeprefix('contacts-')}"}, members
    assert not installed & {"aiosmtpd", "pyyaml", "httpx"}, installed


def test_the_service_library_imports_no_service_and_no_tool() -> None:
    imported = set()
    for path in (ROOT / "shared" / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add((path.name, node.module.split(".")[0]))
    outside = {(file, module) for file, module in imported if module.startswith("contacts_") and module != "contacts_shared"}
    assert not outside, f"contacts_shared imports {sorted(outside)}"
