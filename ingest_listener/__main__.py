"""`python -m ingest_listener`: run the listener until SIGTERM/SIGINT, then stop cleanly.

On a stop signal it flushes the buffer to Redis, acknowledges what was written, disconnects (the
broker keeps the session and queues for the next start) and exits 0. It exits 1 only if Redis stayed
unreachable and entries could not be written (their QoS 1/2 messages are redelivered next time).
Configuration comes from `IOT_*` variables / `.env` via `iot_core.settings`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from ingest_listener.listener import Listener
from iot_core.logs import configure_logging
from iot_core.settings import Settings, get_settings

log = logging.getLogger("ingest_listener")


def run(settings: Settings) -> int:
    """Run the listener until SIGTERM/SIGINT; 0 when everything received was written to Redis.

    Takes no arguments from the command line, so every front end (`python -m ingest_listener`,
    `iot-etl listen`) parses its own and calls this.
    """
    listener = Listener(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        listener.request_stop()  # only sets an event; the main thread does the work

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    left = listener.run()
    return 0 if left == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingest_listener", description="MQTT -> Redis streams ingest listener."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run(get_settings())


if __name__ == "__main__":
    sys.exit(main())
