"""The import graph points one way: iot_etl (CLI) -> listener | dagster_project | simulator -> iot_core;
inside dagster_project, the code location -> maintenance -> quality -> ingest -> what they share -> the
library, and neither the library nor the listener, the simulator or the contracts import Dagster."""

from __future__ import annotations

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


def test_no_module_of_the_dagster_side_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "dagster_project").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines: {long}"
