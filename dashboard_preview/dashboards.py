"""The provisioned Grafana dashboards, and their SQL as Grafana's PostgreSQL datasource would send it.

`expand_sql` does what Grafana does before a panel's query reaches the database: template variables
(`$device`, multi-value -> a quoted list), `$__interval`, then the datasource's macros, with the same
pattern (`$__name(args)`, arguments without parentheses) and the same expansions as Grafana's
PostgreSQL macro engine with TimescaleDB support off (as provisioned).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

_MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard file, by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries something (rows unfolded, rows themselves skipped)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def targets(dashboard: Mapping[str, Any], datasource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query sent to a datasource of this type."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("type") == datasource_type:
                yield panel["title"], target


def interval_seconds(text: str) -> float:
    """`5m`, `'5m'`, `30s`, `1h` -> seconds."""
    match = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)'?\s*", text)
    if not match:
        raise ValueError(f"not an interval: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def _rfc3339(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand_sql(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "1m",
    variables: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """A panel's raw SQL with template variables and macros replaced, ready for the database."""
    for name, values in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        listed = ",".join(_quote(v) for v in values)
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", lambda _m, listed=listed: listed, sql)
    sql = sql.replace("$__interval_ms", str(int(interval_seconds(interval) * 1000)))
    sql = sql.replace("$__interval", interval)

    def macro(match: re.Match[str]) -> str:
        name = match[1]
        args = [a.strip() for a in match[2].split(",")] if match[2].strip() else []
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(time_from)}' AND '{_rfc3339(time_to)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(time_from)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(time_to)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            seconds = interval_seconds(args[1])
            step = int(seconds) if seconds == int(seconds) else seconds
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(time_from.timestamp())} AND {args[0]} <= {int(time_to.timestamp())}"
        raise ValueError(f"macro ${name} is not one this helper knows")

    expanded = _MACRO.sub(macro, sql)
    left = re.findall(r"\$\w+", expanded)
    if left:
        raise ValueError(f"unexpanded variables or macros: {left}")
    return expanded
