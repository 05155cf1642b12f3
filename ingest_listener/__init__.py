"""The ingest listener: MQTT messages -> Redis stream entries, at least once, bytes untouched.

It is deliberately minimal: it never parses payloads. It moves every message into
a Redis stream and acknowledges a QoS 1/2 message to the broker only after its entry is written, so
nothing is lost when Redis, the broker or the listener itself goes away.
"""

from ingest_listener.listener import Listener

__all__ = ["Listener"]
