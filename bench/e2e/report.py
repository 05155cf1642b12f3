"""Medians over repetitions, the printed table and the JSON document."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: Scalar columns of every result, in table order: (key, heading, format).
COLUMNS = (
    ("rows_per_s", "rows/s e2e", "{:>10,.0f}"),
    ("latency_p50_s", "p50 s", "{:>7.2f}"),
    ("latency_p95_s", "p95 s", "{:>7.2f}"),
    ("latency_p99_s", "p99 s", "{:>7.2f}"),
    ("lost", "lost", "{:>6,.0f}"),
    ("cpu_s_per_100k_pipeline", "CPU s/100k", "{:>10.1f}"),
    ("peak_rss_mb_system", "RSS MB", "{:>7.0f}"),
    ("publish_rate", "pub msg/s", "{:>9,.0f}"),
    # the product's longest micro-batch run; none for the baselines
    ("longest_run_s", "run max s", "{:>9.1f}"),
)
GROUP_COLUMNS = ("cpu_s_per_100k", "peak_rss_mb")


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float)]
    return statistics.median(numbers) if numbers else None


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, system): the median of each column over the repetitions."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        grouped[(result["mode"], result["system"])].append(result)
    rows = []
    for (mode, system), runs in grouped.items():
        row: dict[str, Any] = {"mode": mode, "system": system, "repetitions": len(runs)}
        row["kinds"] = runs[0].get("kinds", "plain")
        for key in ("messages", "target_rate", "stored", "acked", "latency_max_s"):
            row[key] = _median([r[key] for r in runs])
        for key, _, _ in COLUMNS:
            row[key] = _median([r[key] for r in runs])
        for key in (*GROUP_COLUMNS, "step_max_s"):
            groups = sorted({g for r in runs for g in r[key]})
            row[key] = {g: _median([r[key].get(g, 0.0) for r in runs]) for g in groups}
        rows.append(row)
    return rows


def _cell(fmt: str, value: Any) -> str:
    width = int(fmt.split(">")[1].split(",")[0].split(".")[0])
    return fmt.format(value) if value is not None else "-".rjust(width)


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for mode in sorted({r["mode"] for r in rows}):
        first = next(r for r in rows if r["mode"] == mode)
        load = f"{first['messages']:,.0f} messages of {first['kinds']}" + (
            f" at {first['target_rate']:,.0f} msg/s" if first["target_rate"] else " at once"
        )
        lines.append(f"\n{mode}: {load} (medians of {first['repetitions']})")
        lines.append(f"{'system':<16}" + " ".join(f"{h:>{len(f.format(0))}}" for _, h, f in COLUMNS))
        for row in (r for r in rows if r["mode"] == mode):
            lines.append(f"{row['system']:<16}" + " ".join(_cell(f, row[k]) for k, _, f in COLUMNS))
        lines.append(f"\n{'CPU s/100k | peak RSS MB per process group':<16}")
        for row in (r for r in rows if r["mode"] == mode):
            parts = [
                f"{g} {row['cpu_s_per_100k'][g]:.1f} | {row['peak_rss_mb'].get(g, 0):.0f}"
                for g in row["cpu_s_per_100k"]
            ]
            lines.append(f"  {row['system']:<14} " + ", ".join(parts))
        stepped = [r for r in rows if r["mode"] == mode and r["step_max_s"]]
        if stepped:
            lines.append("\nlongest time of each step of a run, s")
        for row in stepped:
            parts = [f"{step} {seconds:.1f}" for step, seconds in row["step_max_s"].items()]
            lines.append(f"  {row['system']:<14} " + ", ".join(parts))
    return "\n".join(lines)


def write_json(path: Path, args: dict[str, Any], results: list[dict[str, Any]]) -> None:
    document = {"arguments": args, "medians": medians(results), "runs": results}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
