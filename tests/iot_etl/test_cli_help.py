"""`iot-etl --help` imports nothing heavy (no driver, no settings, no Dagster): the commands defined in
other modules are listed from their summaries and imported when they run, with the same listing."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from iot_etl.cli import LAZY_COMMANDS, main
from iot_etl.lazy_commands import LazyGroup

#: what the console script must not import to print its help
HEAVY = (
    "psycopg",
    "redis",
    "pydantic",
    "pydantic_settings",
    "paho",
    "cryptography",
    "rich",
    "structlog",
    "dagster",
    "polars",
    "simulator",
    "iot_core.settings",
)
PROBE = """
import sys
from iot_etl.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
heavy += [name for name in sys.argv[1:] if "." in name and name in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def test_help_imports_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, timeout=120, check=True
    )
    assert "simulate" in done.stdout and "certs" in done.stdout
    assert done.stdout.splitlines()[-1] == "HEAVY:", done.stdout


def test_each_lazy_summary_is_the_commands_own() -> None:
    for name, lazy in LAZY_COMMANDS.items():
        command = lazy.load()
        assert lazy.summary == command.get_short_help_str(limit=1000), name


def test_the_listing_is_the_same_before_and_after_the_commands_are_imported() -> None:
    group = LazyGroup(name="iot-etl", commands=dict(main.commands), lazy=LAZY_COMMANDS)
    for name in LAZY_COMMANDS:
        group.commands.pop(name, None)  # as the console script starts: not imported yet
    lazy_listing = CliRunner().invoke(group, ["--help"]).output
    for name in LAZY_COMMANDS:
        assert group.get_command(click.Context(group), name) is not None
        assert name in group.commands
    loaded_listing = CliRunner().invoke(group, ["--help"]).output
    assert lazy_listing == loaded_listing
    for name in LAZY_COMMANDS:
        assert f"  {name} " in loaded_listing
