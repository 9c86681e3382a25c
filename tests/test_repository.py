"""Repository-level guarantees: lint clean, every setting documented."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from realty.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_setting_is_in_env_example() -> None:
    documented = set(
        re.findall(r"^#?\s*(REALTY_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    expected = {f"REALTY_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected - {"REALTY_DAGSTER_PG_URL"} == set()


PACKAGES = ("realty", "realty_ops", "realty_assets", "serving", "ui", "source")
# What each product package may import of the others: realty/ is the library under everything;
# the ops package (processes, the CLI, the harness) sits on top of all of them.
MAY_IMPORT = {
    "realty": {"realty"},
    "realty_assets": {"realty", "realty_assets"},
    "serving": {"realty", "serving"},
    "ui": {"realty", "ui"},  # settings and the listing rules; never model code (DESIGN)
    "source": {"realty", "source"},
    "realty_ops": set(PACKAGES),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules ``path`` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_packages_import_only_downwards() -> None:
    modules = first_party_modules()
    upward = {
        (name, imported)
        for name, path in modules.items()
        for imported in imported_modules(path, modules)
        if imported.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]
    }
    assert upward == set()


def test_no_import_cycles() -> None:
    modules = first_party_modules()
    graph = {
        name: imported_modules(path, modules) & modules.keys() for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError(" -> ".join((*path[path.index(name) :], name)))
        if name in done:
            return
        for imported in sorted(graph[name] - {name}):
            visit(imported, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_library_files_stay_small_and_harness_free() -> None:
    for path in (ROOT / "realty").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path
    for package in ("realty", "serving"):
        assert not list((ROOT / package).rglob("sandbox.py")), "the harness lives in realty_ops"
