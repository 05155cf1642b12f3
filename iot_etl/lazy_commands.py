"""Commands defined in modules that are imported only when the command runs (or its own `--help` is
asked for): `iot-etl --help` lists them from their one-line summaries without importing them.

The simulator's and the PKI's commands pull in paho, cryptography, rich and the settings; listing them
should cost none of that. `tests/iot_etl/test_cli_help.py` checks each summary against the command's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click
from click.utils import make_default_short_help

from iot_etl.errors import ExplainingGroup


@dataclass(frozen=True)
class LazyCommand:
    #: `module:attribute` of the click command
    target: str
    #: what `iot-etl --help` shows beside its name: the command's own short help, untruncated
    #: (`command.get_short_help_str(limit=1000)`)
    summary: str

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(ExplainingGroup):
    """An `ExplainingGroup` whose commands in `lazy` are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.lazy[cmd_name].load(), name=cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lists commands, with the summaries of commands not imported yet."""
        names = [name for name in self.list_commands(ctx) if name in self.lazy or name in self.commands]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                rows.append((name, make_default_short_help(self.lazy[name].summary, limit)))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
