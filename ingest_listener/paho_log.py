"""paho's log lines of the listener, kept to what an operator can act on.

The listener says itself, in words, why a connection attempt failed or a connection was lost (one line per
cause per period); paho's own ERROR lines for the same events would repeat that once per attempt.
"""

from __future__ import annotations

import logging
from typing import Any

PAHO_LOG = logging.getLogger("ingest_listener.paho")


def _drop_not_connected_noise(record: logging.LogRecord) -> bool:
    """paho's loop logs "Client is not connected" as an ERROR whenever it spins without a socket
    (broker unreachable, or right after our own DISCONNECT). We log those situations ourselves, in
    words an operator can act on; this one is noise."""
    return not str(record.msg).startswith("Client is not connected")


PAHO_LOG.addFilter(_drop_not_connected_noise)


class PahoLogTap(logging.LoggerAdapter):
    """paho's logger for one client, which hands the socket error of a failing connection to `on_error`
    instead of logging it: a broker that ends every TLS 1.3 connection (refusing the certificate after
    the handshake) would otherwise put one ERROR line per attempt in the log."""

    def __init__(self, logger: logging.Logger, on_error: Any) -> None:
        super().__init__(logger, {})
        self._on_error = on_error

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        # paho calls this twice per QoS 1 message (its DEBUG lines on the PUBLISH and the PUBACK): this
        # check is all those cost while DEBUG is off
        if level < logging.ERROR and not self.logger.isEnabledFor(level):
            return
        failing = level >= logging.ERROR and args and str(msg).startswith("failed to receive on socket")
        if failing and self._on_error(args[0]):
            return
        super().log(level, msg, *args, **kwargs)
