"""Test support: private, throw-away service instances (real processes, no mocks).

`PrivateMosquitto` and `PrivateRedis` start their own broker / server on a free local port in a
temporary directory, so a test can stop, restart or wipe them without touching the system services.
"""

from tests.support.mosquitto import PrivateMosquitto
from tests.support.ports import free_port, wait_for_port
from tests.support.redis_server import PrivateRedis

__all__ = ["PrivateMosquitto", "PrivateRedis", "free_port", "wait_for_port"]
