"""The listener's connection attempts and what the log says of them: a failing attempt (broker away,
TLS refused after the handshake, CONNACK refused) is one line per cause per period, however often paho
retries; a lost connection is one warning, a reconnect to present a rotated certificate one info line.
"""

from __future__ import annotations

import logging

from paho.mqtt.reasoncodes import ReasonCode

from iot_core.mqtt.client import describe_connect_error
from iot_core.mqtt.throttled_log import ThrottledLog


class ConnectionAttempts:
    """The state of the current connection attempt, kept in paho's thread, and the lines it makes."""

    def __init__(self, log: logging.Logger, address: str, throttled: ThrottledLog) -> None:
        self._log = log
        self._address = address
        self._throttled = throttled
        self.up = False  # the current connection got a successful CONNACK
        self.rotating = False  # the listener ended the connection to present a rotated certificate
        self._noted = False  # the current attempt's failure is counted in the throttled log
        self._socket_error: BaseException | None = None

    def attempt(self) -> None:
        """A new connection attempt begins."""
        self.up = False
        self._noted = False
        self._socket_error = None

    def socket_error(self, error: BaseException) -> bool:
        """paho's socket error (read or write); True when it is ours to report (the attempt failed)."""
        self._socket_error = error
        return not self.up

    def failed(self, cause: str) -> None:
        """Count a failed connection attempt; one line per cause per period."""
        if not self._noted:
            self._noted = True
            self._throttled.note(cause, f"cannot connect to the broker at {self._address}: {cause}")

    def connected(self) -> int:
        """The broker accepted the connection; returns how many attempts failed since the last one."""
        self.up = True
        self.rotating = False
        return self._throttled.reset()

    def disconnected(self, reason_code: ReasonCode, stopping: bool) -> None:
        """The connection ended (or the attempt did); one line unless the listener is stopping."""
        was_up, self.up = self.up, False
        if stopping:
            return
        if not was_up:  # the attempt failed: TLS refused after the handshake, or CONNACK refused
            error = self._socket_error
            self.failed(
                describe_connect_error(error)
                if error is not None
                else f"the broker closed the connection before accepting it ({reason_code})"
            )
        elif self.rotating:
            self._log.info("disconnected to present the rotated certificate; reconnecting")
        else:
            error = self._socket_error
            self._log.warning(
                "disconnected from the broker (%s%s); reconnecting",
                reason_code,
                f": {describe_connect_error(error)}" if error is not None else "",
            )
