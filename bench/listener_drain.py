"""One subscriber draining its session's QoS 1 backlog, in a process of its own (started by `bench.listener`).

    python -m bench.listener_drain '<json: kind, host, port, redis_url, client_id, stream, expected, pids>'

Kinds, all on a persistent MQTT v5 session with the listener's session expiry and receive maximum, a QoS 1
subscription repeated on connect, and manual acknowledgement:
- `bare`: acknowledges each message in its callback, as it arrives (the least a QoS 1 subscriber does);
- `redis`: buffers each message, a writer thread XADDs batches of up to `flush_count` in one pipelined round
  trip (the listener's fields, packed by hiredis) and acknowledges them once Redis answered: the paho +
  Redis floor, with the listener's guarantee and nothing else;
- `listener`: the product's `Listener`, with its own Redis client, device limits on.
The drain runs from the client's start until every message is acknowledged (queued as a PUBACK, or
limited), then the process prints one JSON line: seconds, its own CPU seconds in that time, the CPU
seconds of `pids` (broker, Redis) in that time, the machine's busy share and load average.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import redis as redis_lib
from hiredis import pack_command
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest_listener.listener import Listener
from iot_core.settings import Settings

#: Device limits high enough that no message of a drained backlog (every device bursting) is limited;
#: the listener still checks each message against them.
BENCH_MSGS_PER_S = 1_000_000.0
BENCH_BYTES_PER_S = 1_000_000_000
XADD = b"XADD"


def bench_listener_settings(host: str, port: int, redis_url: str, client_id: str, stream: str) -> Settings:
    """The listener's settings in these benchmarks: defaults, but the private servers, its own session
    and stream, no metrics endpoint, and device limits that a backlog does not reach."""
    return Settings(
        mqtt_host=host,
        mqtt_port=port,
        redis_url=redis_url,
        stream_prefix=stream,
        listener_client_id=client_id,
        listener_metrics_port=0,
        device_max_msgs_per_s=BENCH_MSGS_PER_S,
        device_max_bytes_per_s=BENCH_BYTES_PER_S,
    )


def paho_client(
    settings: Settings, client_id: str, on_message: Any, subscribed: threading.Event
) -> mqtt.Client:
    """A manual-ack MQTT v5 client on the listener's session settings; subscribes on every connect."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(
        [(t, settings.listener_qos) for t in settings.listener_topics]
    )
    client.on_subscribe = lambda *_: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.listener_session_expiry_s
    properties.ReceiveMaximum = settings.listener_receive_maximum
    client.connect(settings.mqtt_host, settings.mqtt_port, clean_start=False, properties=properties)
    return client


def register(settings: Settings, client_id: str) -> None:
    """Create a paho subscriber's session and subscriptions, then leave (the broker queues for it)."""
    subscribed = threading.Event()
    client = paho_client(settings, client_id, lambda *_: None, subscribed)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise TimeoutError(f"{client_id}: no SUBACK")
    finally:
        client.disconnect()
        client.loop_stop()


def drain_bare(
    settings: Settings, client_id: str, expected: int, done: threading.Event
) -> Callable[[], None]:
    received = 0

    def on_message(client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        client.ack(message.mid, message.qos)
        received += 1
        if received >= expected:
            done.set()

    client = paho_client(settings, client_id, on_message, threading.Event())
    client.loop_start()
    return lambda: (client.disconnect(), client.loop_stop())


def drain_redis(
    settings: Settings,
    client_id: str,
    stream: str,
    expected: int,
    done: threading.Event,
) -> Callable[[], None]:
    """The paho + Redis floor: the listener's flush policy (`flush_count` entries, or the oldest waited
    `flush_ms`) and guarantee (acknowledged once Redis answered), nothing else."""
    redis = redis_lib.Redis.from_url(settings.redis_url.get_secret_value())
    count, flush_s = settings.listener_flush_count, settings.listener_flush_ms / 1000
    buffer: list[tuple[bytes, bytes, int, int, bool, int]] = []
    cond = threading.Condition()
    state = {"acked": 0, "first_at": 0.0, "stop": False}
    stream_b = stream.encode()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        rx_us = time.time_ns() // 1000
        with cond:
            buffer.append((message._topic, message.payload, message.qos, message.mid, message.retain, rx_us))
            if len(buffer) == 1:
                state["first_at"] = time.monotonic()
                cond.notify()
            elif len(buffer) == count:
                cond.notify()

    client = paho_client(settings, client_id, on_message, threading.Event())

    def take() -> list[tuple[bytes, bytes, int, int, bool, int]] | None:
        with cond:
            while not state["stop"]:
                if len(buffer) >= count:
                    break
                wait = state["first_at"] + flush_s - time.monotonic() if buffer else None
                if wait is not None and wait <= 0:
                    break
                cond.wait(wait)
            if state["stop"]:
                return None
            batch = buffer[:count]
            del buffer[:count]
            state["first_at"] = time.monotonic()
            return batch

    def write() -> None:
        conn = redis.connection_pool.get_connection()
        while (batch := take()) is not None:
            packed = b"".join(
                pack_command(
                    (
                        XADD,
                        stream_b,
                        b"*",
                        b"topic",
                        t,
                        b"payload",
                        p,
                        b"qos",
                        str(q),
                        b"retain",
                        b"1" if r else b"0",
                        b"rx_us",
                        str(us),
                    )
                )
                for t, p, q, _m, r, us in batch
            )
            conn.send_packed_command([packed])
            for _ in batch:
                conn.read_response()
            for _t, _p, qos, mid, _r, _us in batch:
                client.ack(mid, qos)
            state["acked"] += len(batch)
            if state["acked"] >= expected:
                done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    client.loop_start()

    def close() -> None:
        client.disconnect()
        client.loop_stop()
        with cond:
            state["stop"] = True
            cond.notify()
        writer.join(5)
        redis.delete(stream)
        redis.close()

    return close


def drain_listener(settings: Settings, expected: int, done: threading.Event) -> Callable[[], None]:
    listener = Listener(settings)
    metrics = listener.metrics

    def watch() -> None:
        while True:
            # the counters' values, read without collecting the registry
            limited = sum(c._value.get() for c in metrics.messages_limited._metrics.values())
            acked = metrics.acks_sent._value.get() + limited
            if acked >= expected:
                done.set()
                return
            time.sleep(0.005)

    listener.start()
    threading.Thread(target=watch, daemon=True).start()

    def close() -> None:
        listener.stop()
        redis = redis_lib.Redis.from_url(settings.redis_url.get_secret_value())
        redis.delete(settings.stream_prefix)
        redis.close()

    return close


class CollectorTime:
    """Seconds the garbage collector ran, from `gc.callbacks` (all threads)."""

    def __init__(self) -> None:
        self.seconds, self._began = 0.0, 0.0
        self.collections = [0, 0, 0]  # by generation
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.collections[info["generation"]] += 1


def usage_self() -> tuple[float, float, int]:
    """This process's user and system CPU seconds, and its context switches (voluntary and not)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each of this process's threads so far, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    cpu: dict[str, float] = {}
    for thread in psutil.Process().threads():
        name = names.get(thread.id, "other")
        name = "paho" if name.startswith("paho-mqtt-client") else name
        cpu[name] = cpu.get(name, 0.0) + thread.user_time + thread.system_time
    return cpu


def cpu_of(processes: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in processes]


def main() -> None:
    job = json.loads(sys.argv[1])
    settings = bench_listener_settings(
        job["host"], job["port"], job["redis_url"], job["client_id"], job["stream"]
    )
    processes = [psutil.Process(pid) for pid in job["pids"]]
    expected, done = job["expected"], threading.Event()
    collector = CollectorTime()
    machine, others, own, start = psutil.cpu_times(), cpu_of(processes), usage_self(), time.perf_counter()
    if job["kind"] == "bare":
        close = drain_bare(settings, job["client_id"], expected, done)
    elif job["kind"] == "redis":
        close = drain_redis(settings, job["client_id"], job["stream"], expected, done)
    else:
        close = drain_listener(settings, expected, done)
    finished = done.wait(job["timeout"])
    seconds, own = time.perf_counter() - start, [b - a for a, b in zip(own, usage_self(), strict=True)]
    others = [after - before for before, after in zip(others, cpu_of(processes), strict=True)]
    threads = thread_cpu()
    machine_after = psutil.cpu_times()
    idle = (machine_after.idle + machine_after.iowait) - (machine.idle + machine.iowait)
    total = sum(machine_after) - sum(machine)
    close()
    print(
        json.dumps(
            {
                "finished": finished,
                "seconds": seconds,
                "cpu": own[0] + own[1],
                "sys": own[1],
                "switches": own[2],
                "threads": threads,
                "gc_seconds": collector.seconds,
                "gc_collections": collector.collections,
                "listener_code": str(Path(sys.modules[Listener.__module__].__file__ or "").parent),
                "others": others,
                "busy": 1 - idle / total if total > 0 else 0.0,
                "load": os.getloadavg()[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
