"""Logging for every process, configured once: human lines on a terminal, one JSON object per line
otherwise (for log shippers). Modules log through the standard `logging` API or `structlog.get_logger`;
both end up here. Payload bytes are logged at debug level only."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_HANDLER_NAME = "iot-etl"
# libraries whose INFO lines describe their own set-up, not the pipeline (alembic: Dagster's storage
# schema tooling, loaded on every command that opens Dagster's instance); shown from WARNING up
_CHATTY = ("alembic",)

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    level: int | str = logging.INFO, *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route all logging to `stream` (stderr): console lines when it is a terminal, JSON otherwise
    (`json` forces one or the other). Calling it again only replaces the handler and the level."""
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        # plain tracebacks: rich's would print local variables, which can hold credentials
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    final: list[structlog.typing.Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[*final, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
