"""Several publisher processes sending the benchmark's messages at once (burst) or at a rate (sustained).

Processes rather than threads so that the publisher is not the bottleneck of a Python system under
test: each process has its own acknowledging `Publisher` (QoS 1) and the GIL of its own.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.e2e import messages
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import Publisher

#: How long after the last process connected they all start.
START_DELAY_S = 0.5
ACK_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class PublishResult:
    publish_times: list[float]  # wall-clock publish time of every message, ascending
    acked: int
    failed: int
    first_publish: float
    last_ack: float

    @property
    def published(self) -> int:
        return len(self.publish_times)

    @property
    def rate(self) -> float:
        """Messages acknowledged by the broker per second, all processes together."""
        return self.acked / max(self.last_ack - self.first_publish, 1e-9)


def _publish_share(
    index: int,
    processes: int,
    total: int,
    rate: float | None,
    host: str,
    port: int,
    kinds: tuple[str, ...],
    bad_share: float,
    start: Any,
    out: mp.Queue,
) -> None:
    message = messages.source(index, kinds, bad_share)
    publisher = Publisher(MqttEndpoint(host, port), f"bench-pub{index}")
    publisher.connect()
    out.put(("connected", index))
    start_at = start.get()
    seqs = range(index, total, processes)
    interval = processes / rate if rate else 0.0
    times = array("d")
    time.sleep(max(0.0, start_at - time.time()))
    for k, seq in enumerate(seqs):
        if interval:
            delay = start_at + (k + index / processes) * interval - time.time()  # staggered
            if delay > 0:
                time.sleep(delay)
        now = time.time()
        publisher.publish(*message(seq, now), qos=1)
        times.append(now)
    publisher.wait_for_acks(ACK_TIMEOUT_S)
    last_ack = time.time()
    publisher.close()
    out.put(("done", (times.tobytes(), publisher.acked, publisher.failed, last_ack)))


def publish(
    host: str,
    port: int,
    total: int,
    processes: int,
    rate: float | None = None,
    kinds: tuple[str, ...] = messages.PLAIN,
    bad_share: float = messages.BAD_SHARE,
) -> PublishResult:
    """Publish `total` messages (`bench.e2e.messages`: plain ones, or the fleet of `kinds`) from
    `processes` processes, all at once (`rate` None) or at `rate` msg/s in all; returns once every process
    has its acknowledgements."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start: mp.Queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_publish_share,
            args=(i, processes, total, rate, host, port, kinds, bad_share, start, out),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    connected = 0
    results = []
    while len(results) < len(workers):
        try:
            kind, value = out.get(timeout=1.0)
            if kind == "connected":
                connected += 1
                if connected == len(workers):  # spawning is slow on a busy machine: start together
                    start_at = time.time() + START_DELAY_S
                    for _ in workers:
                        start.put(start_at)
            else:
                results.append(value)
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a publisher process failed (exit codes {dead})") from None
    for worker in workers:
        worker.join(10)
    times: list[float] = []
    for raw, *_ in results:
        chunk = array("d")
        chunk.frombytes(raw)
        times.extend(chunk)
    times.sort()
    return PublishResult(
        publish_times=times,
        acked=sum(r[1] for r in results),
        failed=sum(r[2] for r in results),
        first_publish=times[0] if times else time.time(),
        last_ack=max(r[3] for r in results),
    )
