"""The GraphQL documents the Dagster UI itself sends, taken from the installed `dagster-webserver`.

The webserver ships the UI's TypeScript sources inside its source maps; every `gql` template there is a
query or fragments. A named query is returned with the fragments it spreads (transitively) appended, the
same document the browser sends, so the timings follow the installed Dagster version.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import dagster_webserver

BUILD = Path(dagster_webserver.__file__).parent / "webapp" / "build"
_GQL = re.compile(r"gql`(.*?)`", re.S)
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_DEFINITION = re.compile(r"^\s*(query|fragment|mutation|subscription)\s+(\w+)", re.M)
_SPREAD = re.compile(r"\.\.\.\s*(\w+)")


def _definitions(text: str) -> dict[str, str]:
    """name -> text of every top-level definition in one gql template (braces matched)."""
    out: dict[str, str] = {}
    position = 0
    while match := _DEFINITION.search(text, position):
        opening = text.find("{", match.end())
        if opening < 0:
            break
        depth, end = 0, opening
        for end in range(opening, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        out[match.group(2)] = text[match.start() : end + 1]
        position = end + 1
    return out


@lru_cache(maxsize=1)
def ui_definitions() -> dict[str, str]:
    """Every query and fragment of the UI's sources, by name."""
    found: dict[str, str] = {}
    for source_map in sorted(BUILD.rglob("*.js.map")):
        document = json.loads(source_map.read_text(encoding="utf-8"))
        for content in document.get("sourcesContent") or []:
            if content and "gql`" in content:
                for template in _GQL.findall(content):
                    found.update(_definitions(_INTERPOLATION.sub("", template)))
    return found


def ui_query(name: str) -> str:
    """Query `name` with every fragment it needs, as one document."""
    definitions = ui_definitions()
    if name not in definitions:
        raise KeyError(f"the installed Dagster UI has no query {name}")
    needed, todo = [name], [name]
    while todo:
        for spread in _SPREAD.findall(definitions[todo.pop()]):
            if spread in definitions and spread not in needed:
                needed.append(spread)
                todo.append(spread)
    return "\n\n".join(definitions[n] for n in needed)
