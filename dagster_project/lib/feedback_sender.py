"""A run's ACKs and dead letters, published page by page while the run decodes its next page.

Publishing is paho's work in Python, one packet out and one acknowledgement in per message: at 5,000 msg/s
of the fleet's mix a 20 s window owes about 38,000 ACKs, which took 8.1 s after the window had been decoded
and stored. Handed over as each page is committed, they are published on a thread of the sender's own (and
paho's network thread) while the run decodes and stores the next page; the run then waits only for what
is left when its last page is stored.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import Publisher

if TYPE_CHECKING:  # polars is imported by the run workers, not where the code location loads
    import polars as pl


class FeedbackSender:
    """Publishes frames of `feedback.FEEDBACK` rows at QoS 1 on a connection of its own, opened with the
    first frame; `finish` waits for the broker's acknowledgements and says how many there were."""

    def __init__(self, endpoint: MqttEndpoint, client_id_prefix: str, ack_timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint
        self.client_id_prefix = client_id_prefix
        self.ack_timeout_s = ack_timeout_s
        self.handed = 0  # messages handed to `send`
        self.error: Exception | None = None  # why publishing stopped, if it did
        self._frames: queue.SimpleQueue[pl.DataFrame | None] = queue.SimpleQueue()
        self._publisher: Publisher | None = None
        self._thread = threading.Thread(target=self._publish_frames, name="feedback-sender", daemon=True)

    def __enter__(self) -> FeedbackSender:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    def send(self, feedback: pl.DataFrame) -> None:
        """Publish these messages (the topic and payload columns) after those sent before."""
        if feedback.height:
            self.handed += feedback.height
            self._frames.put(feedback)

    def finish(self) -> int:
        """Wait until every message handed over is acknowledged (or the timeout has passed, or publishing
        failed); the number the broker acknowledged. Idempotent."""
        if self._thread.is_alive():
            self._frames.put(None)
            self._thread.join()
        return self._publisher.acked if self._publisher is not None else 0

    def _publish_frames(self) -> None:
        try:
            while (frame := self._frames.get()) is not None:
                if self.error is not None:
                    continue  # nothing more is published once publishing failed; the frames are drained
                try:
                    self._publish(frame)
                except Exception as exc:  # kept for the run, which reports or raises it
                    self.error = exc
            if self._publisher is not None and self.error is None:
                self._publisher.wait_for_acks(self.ack_timeout_s)
        finally:
            if self._publisher is not None:
                self._publisher.close()

    def _publish(self, frame: pl.DataFrame) -> None:
        if self._publisher is None:
            self._publisher = Publisher(self.endpoint, self.client_id_prefix, max_inflight=0)
            self._publisher.connect()
        self._publisher.publish_many(frame.select("topic", "payload").rows(), qos=1)
