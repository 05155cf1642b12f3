"""The import graph points one way: iot_etl (CLI) -> listener | dagster_project | simulator -> iot_core;
inside dagster_project, the code location -> maintenance -> quality -> ingest -> what they share -> the
library, and neither the library nor the listener, the simulator or the contracts import Dagster. Test modules
share helpers through tests.support, never by importing one another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_lower_layer_imports_a_higher_one() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


PACKAGES = ("iot_core", "iot_etl", "ingest_listener", "simulator", "dagster_project")


def test_no_module_of_any_package_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines: {long}"


def _imported(node: ast.AST) -> list[str]:
    """The modules an import statement names; a relative import counts as `tests.` plus its dots."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else ["tests." + "." * node.level + (node.module or "")]
    return []


def test_no_test_module_imports_another_test_module() -> None:
    """A helper two test files need lives in tests/support/: importing a test module would also collect its
    tests' fixtures and constants, and tie one file's refactoring to another's."""
    crossing = {
        f"{path.relative_to(ROOT)}:{node.lineno}": name
        for path in (ROOT / "tests").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for name in _imported(node)
        if name.startswith("tests.") and not name.startswith("tests.support")
    }
    assert not crossing, f"test modules importing other test modules: {crossing}"
