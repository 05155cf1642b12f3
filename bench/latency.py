"""Per-run overhead and publish-to-queryable latency of the running pipeline (`iot-etl up`), measured.

    .venv/bin/python -m bench.latency [--window 10] [--runs 6] [--messages 5] [--kinds plain]

Starts `iot-etl up --no-simulator` on a scratch database, stream and Dagster home, with empty windows
not skipped, then reports (1) window closed -> run finished for empty windows, from Dagster's own run
records, and (2) MQTT publish -> queryable for single messages of the simulator's fleet (`--kinds`, all
three formats by default, 5 % bad): a message is queryable once the batch that archived it has finished
(whatever it became: rows, several rows, a rejection). The baseline printed beside them is the window
length itself: a message waits on average half a window before its window closes.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg

from dagster_project.defs.run_window import configured_range
from iot_etl.launch import launch_up


def run_overheads(dagster_home: str, wanted: int, timeout_s: float) -> list[float]:
    os.environ["DAGSTER_HOME"] = dagster_home  # this process reads Dagster's own instance, as Dagster does
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    deadline = time.monotonic() + timeout_s
    with DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
            overheads = [
                r.end_time - configured[1] / 1000
                for r in records
                if r.end_time and (configured := configured_range(r.dagster_run.run_config)) is not None
            ]
            if len(overheads) >= wanted:
                return overheads
            time.sleep(1)
    raise TimeoutError(f"fewer than {wanted} runs finished in {timeout_s} s")


def publish_latencies(url: str, count: int, timeout_s: float, kinds: tuple[str, ...]) -> list[float]:
    from datetime import UTC, datetime

    from simulator.messages import MessageFactory

    fleet = MessageFactory(int(time.time()), kinds=kinds)
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5,
        client_id=f"bench-{uuid.uuid4().hex[:6]}",
    )
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    latencies = []
    try:
        for _ in range(count):
            message = fleet.next(datetime.now(UTC))
            published = time.monotonic()
            client.publish(message.topic, message.payload, qos=1).wait_for_publish(10)
            while time.monotonic() - published < timeout_s:
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        """SELECT 1 FROM raw_messages r JOIN batches b USING (batch_id)
                           WHERE r.topic = %s AND r.payload = %s AND b.finished_at IS NOT NULL""",
                        (message.topic, message.payload),
                    ).fetchone()
                if row:
                    latencies.append(time.monotonic() - published)
                    break
                time.sleep(0.1)
            else:
                raise TimeoutError(f"message on {message.topic} not queryable within {timeout_s} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return latencies


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):5.1f} s  min {min(values):5.1f}  max {max(values):5.1f}  "
        f"(n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=10, help="micro-window seconds")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--kinds", default="plain,event,f2", help="the simulator's formats to publish")
    args = parser.parse_args()

    name = f"iot_bench_{uuid.uuid4().hex[:8]}"
    home = tempfile.mkdtemp(prefix="iot-bench-dagster-")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        {
            "IOT_DATABASE_URL": url,
            "IOT_STREAM_PREFIX": f"bench:{name}:raw",
            "IOT_DAGSTER_HOME": home,
            "IOT_LISTENER_CLIENT_ID": f"listener-{name}",
            "IOT_LISTENER_METRICS_PORT": "0",
            "IOT_WEBSERVER_PORT": "3399",
            "IOT_WINDOW_SECONDS": str(args.window),
            "IOT_WINDOW_GRACE_MS": "500",
            "IOT_SENSOR_SKIP_EMPTY_WINDOWS": "false",
            # the run workers' forkserver starts with the daemon: its imports are not a window's latency
            "IOT_RUN_WORKERS_START": "daemon_start",
        }
    )
    up, _ = launch_up(env, "--no-simulator")
    try:
        overheads = run_overheads(home, args.runs, timeout_s=args.runs * args.window * 3 + 60)
        latencies = publish_latencies(
            url, args.messages, timeout_s=args.window + 60, kinds=tuple(args.kinds.split(","))
        )
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(30)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"window {args.window} s, sensor interval 5 s, in-process executor, queued runs (1 s dequeue)\n")
    print(f"{'measure':<40} result")
    print(f"{'window closed -> run finished (empty)':<40} {describe(overheads)}")
    print(f"{f'publish -> queryable (one message, {args.kinds})':<40} {describe(latencies)}")
    print(f"{'baseline: half a window (mean wait)':<40} {args.window / 2:5.1f} s")


if __name__ == "__main__":
    main()
