"""One line per failure for every `iot-etl` command: what happened and what to do.

`explain` turns the exceptions users meet (a bad setting, a service that is not reachable, a port in
use) into that line; `ExplainingGroup` is the click group that prints it on stderr and exits non-zero,
and shows the traceback only with `--debug`. Commands with their own failure modes raise
`iot_core.errors.UserFacingError` (or `CommandFailed` for a plain exit status with a message).
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any

import click

from iot_core.db_errors import postgres_refusal
from iot_core.errors import UserFacingError
from iot_core.redact import redact_text

if TYPE_CHECKING:
    import pydantic

PROG = "iot-etl"


class CommandFailed(UserFacingError):
    """The command ran but its outcome is a failure (e.g. `status` with a component down)."""

    def __init__(self, what: str, todo: str, exit_code: int = 1) -> None:
        super().__init__(what, todo)
        self.exit_code = exit_code


def _setting_errors(exc: pydantic.ValidationError) -> str:
    from iot_core.settings_secrets import SECRET_FIELDS

    parts = []
    for error in exc.errors(include_url=False):
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        loc = [str(p) for p in error.get("loc", ())]
        if not loc:  # a check across settings names its variables itself
            parts.append(message)
            continue
        name = f"IOT_{loc[0].upper()}"
        if loc[0] in SECRET_FIELDS or "input" not in error:
            parts.append(f"{name}: {message}")
        else:
            parts.append(f"{name}={error['input']!s}: {message}")
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def explain(exc: BaseException) -> str:
    """The one line a user sees for `exc`, with no password in it (drivers' messages can quote a URL or a
    connection string)."""
    return redact_text(_explain(exc))


def _loaded(module: str) -> Any:
    """`module` if this process has imported it, else None: an exception can only be of a library that is
    loaded, and `iot-etl --help` should not import psycopg, redis, pydantic or paho to say so."""
    return sys.modules.get(module)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, UserFacingError):
        return str(exc)
    pydantic, psycopg, redis = _loaded("pydantic"), _loaded("psycopg"), _loaded("redis")
    mqtt = _loaded("iot_core.mqtt.publisher")
    if pydantic and isinstance(exc, pydantic.ValidationError):
        return (
            f"bad setting: {_setting_errors(exc)}; fix it in the environment or .env "
            "(docs/configuration.md lists every IOT_* setting)"
        )
    if psycopg and isinstance(exc, psycopg.OperationalError):
        refusal = postgres_refusal(str(exc), "IOT_DATABASE_URL")
        if refusal is not None:
            return str(refusal)
        return f"database unreachable: {_first_line(exc)}; start PostgreSQL or point IOT_DATABASE_URL at it"
    if psycopg and isinstance(exc, psycopg.Error):
        return f"database error: {_first_line(exc)}; check the database behind IOT_DATABASE_URL"
    if redis and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"Redis unreachable: {_first_line(exc)}; start Redis or point IOT_REDIS_URL at it"
    if redis and isinstance(exc, redis.RedisError):
        return f"Redis error: {_first_line(exc)}; check the server behind IOT_REDIS_URL"
    if mqtt and isinstance(exc, mqtt.PublishError):
        return f"MQTT broker down: {_first_line(exc)}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"port in use: {_first_line(exc)}; stop what listens there or configure another port"
    if isinstance(exc, OSError):
        return f"{_first_line(exc)}; check the path or address it names"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}; run again with --debug for the traceback"


def _say(line: str) -> None:
    click.echo(f"{PROG}: error: {line.replace('.;', ';')}", err=True)


class ExplainingGroup(click.Group):
    """A click group whose commands fail with one line on stderr (a traceback only with `--debug`)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        standalone = kwargs.pop("standalone_mode", True)
        try:
            # not standalone: click hands every failure to us instead of printing usage and exiting
            result = super().main(*args, standalone_mode=False, **kwargs)
            code = result if isinstance(result, int) else 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else PROG
            _say(f"{exc.format_message()}; see `{where} --help`")
            code = exc.exit_code
        except click.ClickException as exc:
            _say(exc.format_message())
            code = exc.exit_code
        except click.Abort:
            _say("aborted")
            code = 130
        except CommandFailed as exc:
            _say(str(exc))
            code = exc.exit_code
        except Exception as exc:
            if _debug_requested(args, kwargs):
                raise
            _say(explain(exc))
            code = 1
        if not standalone:
            return code
        sys.exit(code)


def _debug_requested(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    given = kwargs.get("args", args[0] if args else None)
    argv = sys.argv[1:] if given is None else list(given)
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    return "--debug" in argv[:command_at]
