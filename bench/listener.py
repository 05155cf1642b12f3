"""The listener against a bare paho subscriber and a paho + Redis floor, draining the same QoS 1 backlog.

    .venv/bin/python -m bench.listener [--messages 50000] [--repeat 3] [--json out.json]

One private Mosquitto with the project's generated configuration and one private Redis for the whole
invocation. Three persistent sessions are registered (`bench.listener_drain`: the bare paho subscriber's,
the paho + Redis floor's and the listener's, all with the listener's session expiry, receive maximum,
topic filters and QoS 1), then per repetition `--messages` messages of the simulator's default mix (plain
metrics, events including arrays, F2 frames, 5 % bad; `--devices` plain and event devices) are published
while all three are away, so each session holds the same backlog. Each subscriber then drains it alone,
in a fresh process of its own, the order rotated per repetition: `bare` acknowledges each message in its
callback; `redis` XADDs batches of up to the listener's flush count in one pipelined round trip and
acknowledges them once Redis answered; `listener` is the product's listener (device limits on, set above
what a backlog reaches). A drain ends when every message is acknowledged.

Prints per repetition and as medians (with the range): msg/s, the ratio to the bare subscriber, CPU
seconds per 100k messages of the subscriber's process, the broker and Redis, the machine's busy share
during the drain, and the load average. Ratios within one repetition are what compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis as redis_lib

from bench.listener_drain import bench_listener_settings, register
from ingest_listener.listener import Listener
from ingest_listener.session import prime_session
from iot_core.settings import Settings
from simulator.messages import MessageFactory
from tests.support.mosquitto import PrivateMosquitto
from tests.support.redis_server import PrivateRedis

KINDS = ("bare", "redis", "listener")
NAMES = {"bare": "bare paho", "redis": "paho + Redis", "listener": "listener", "other": "listener (other)"}
ROOT = Path(__file__).resolve().parent.parent


def mix(n: int, devices: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """`n` messages of the simulator's default mix (all three formats, 5 % bad), 1 ms apart."""
    factory = MessageFactory(seed, devices=devices, bad_share=0.05)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [(m.topic, m.payload) for m in (factory.next(start + timedelta(milliseconds=i)) for i in range(n))]


def drain(job: dict[str, object], profile: Path | None = None, tree: Path | None = None) -> dict[str, float]:
    """Run one subscriber's drain in a process of its own; its JSON report. With `profile`, under py-spy
    (collapsed stacks per thread into that file; sampling pauses the process, so rates drop). With `tree`,
    the `ingest_listener` package is that checkout's (a folder holding only it comes first on the path)."""
    spy = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "250", "-t", "-f", "raw"]
    command = [sys.executable, "-m", "bench.listener_drain", json.dumps(job)]
    with tempfile.TemporaryDirectory(prefix="bench-listener-") as shim:
        cwd, env = ROOT, dict(os.environ)
        if tree is not None:
            (Path(shim) / "ingest_listener").symlink_to(tree.resolve() / "ingest_listener")
            cwd, env["PYTHONPATH"] = Path(shim), os.pathsep.join([shim, str(ROOT), env.get("PYTHONPATH", "")])
        out = subprocess.run(
            [*spy, "-o", str(profile), "--", *command] if profile is not None else command,
            check=True,
            capture_output=True,
            text=True,
            timeout=float(job["timeout"]) + 60,  # type: ignore[arg-type]
            cwd=cwd,
            env=env,
        )
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    if not result["finished"]:
        raise TimeoutError(f"{job['kind']} did not drain {job['expected']} messages: {out.stderr[-2000:]}")
    return result


def row(name: str, n: int, result: dict[str, float], bare_rate: float) -> str:
    """One subscriber's figures; CPU seconds per 100k messages."""
    rate, per = n / result["seconds"], 100_000 / n
    broker, redis = (c * per for c in result["others"])  # type: ignore[attr-defined]
    own, sys_, gc_ = result["cpu"] * per, result["sys"] * per, result["gc_seconds"] * per
    switches, busy, load = result["switches"] / n, result["busy"], result["load"]
    return (
        f"{name:<16} {rate:>7,.0f} {rate / bare_rate:>7.0%} {own:>7.2f} {sys_:>5.2f} {gc_:>5.2f}"
        f" {broker:>6.2f} {redis:>6.2f} {switches:>7.2f} {busy:>7.0%} {load:>5.2f}"
    )


HEADER = (
    f"{'subscriber':<16} {'msg/s':>7} {'vs bare':>7} {'CPU/100k':>7} {'(sys)':>5} {'(gc)':>5} {'broker':>6}"
    f" {'redis':>6} {'csw/msg':>7} {'machine':>7} {'load':>5}"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--devices", type=int, default=100, help="plain and event devices of the mix")
    parser.add_argument("--kinds", default=",".join(KINDS), help="which subscribers, comma-separated")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write every repetition's figures here")
    parser.add_argument("--profile", type=Path, help="a folder: each drain under py-spy, stacks into it")
    parser.add_argument(
        "--other-listener",
        type=Path,
        help="a checkout (e.g. a worktree of an older commit) whose listener drains too: 'listener (other)'",
    )
    args = parser.parse_args(argv)
    n, kinds = args.messages, [k for k in args.kinds.split(",") if k]
    if args.other_listener is not None:
        if not (args.other_listener / "ingest_listener" / "listener.py").is_file():
            parser.error(f"no ingest_listener package in {args.other_listener}")
        kinds.append("other")
    messages = mix(n, args.devices)
    print(
        f"{n:,} messages of the default mix, {os.cpu_count()} cores, load average {os.getloadavg()}",
        flush=True,
    )
    runs: list[dict[str, dict[str, float]]] = []
    with PrivateMosquitto() as broker, PrivateRedis() as redis:
        tag = uuid.uuid4().hex[:8]
        ids = {kind: f"bench-{kind}-{tag}" for kind in kinds}
        settings = {
            kind: bench_listener_settings(broker.host, broker.port, redis.url, ids[kind], f"bench:{kind}")
            for kind in kinds
        }
        for kind in kinds:
            if kind in ("listener", "other"):
                prime_session(settings[kind])
            else:
                register(settings[kind], ids[kind])
        pids = [broker.pid, redis.pid]
        for repetition in range(args.repeat):
            broker.publish_many(messages, timeout=args.timeout)
            order = kinds[repetition % len(kinds) :] + kinds[: repetition % len(kinds)]
            run: dict[str, dict[str, float]] = {}
            for kind in order:
                job = {
                    "kind": "listener" if kind == "other" else kind,
                    "host": broker.host,
                    "port": broker.port,
                    "redis_url": redis.url,
                    "client_id": ids[kind],
                    "stream": f"bench:{kind}",
                    "expected": n,
                    "pids": pids,
                    "timeout": args.timeout,
                }
                profile = args.profile / f"{kind}-{repetition + 1}.txt" if args.profile else None
                run[kind] = drain(job, profile, args.other_listener if kind == "other" else None)
            runs.append(run)
            if repetition == 0 and "other" in run:
                print(f"listener (other): {run['other']['listener_code']}")
            print(f"\nrepetition {repetition + 1} (order {', '.join(order)})\n{HEADER}")
            bare_rate = n / run["bare"]["seconds"] if "bare" in run else 1.0
            for kind in kinds:
                print(row(NAMES[kind], n, run[kind], bare_rate), flush=True)
    print(f"\nmedians of {args.repeat} (range of msg/s and of the ratio to bare paho within each repetition)")
    print(HEADER)
    for kind in kinds:
        rates = [n / r[kind]["seconds"] for r in runs]
        ratios = (
            [n / r[kind]["seconds"] / (n / r["bare"]["seconds"]) for r in runs] if "bare" in kinds else [0.0]
        )
        median = {
            key: statistics.median(r[kind][key] for r in runs)
            for key in ("seconds", "cpu", "sys", "switches", "gc_seconds", "busy", "load")
        }
        median["others"] = [statistics.median(r[kind]["others"][i] for r in runs) for i in range(2)]  # type: ignore[assignment]
        median["seconds"] = n / statistics.median(rates)
        line = row(
            NAMES[kind], n, median, n / median["seconds"] / statistics.median(ratios) if ratios[0] else 1.0
        )
        print(
            f"{line}   msg/s {min(rates):,.0f}-{max(rates):,.0f}, ratio {min(ratios):.0%}-{max(ratios):.0%}"
        )
    print(f"load average at end {os.getloadavg()}")
    if args.json is not None:
        args.json.write_text(json.dumps({"messages": n, "runs": runs, "load_end": os.getloadavg()}, indent=1))


# --- used by bench.capacity: the listener in this process, plain messages, a given Redis ------------------
TOPIC_FILTER = "devices/#"


def bench_settings(broker: PrivateMosquitto, redis_url: str) -> Settings:
    """The listener's settings for one repetition: the private broker, a stream and a session of its own."""
    return Settings(
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        redis_url=redis_url,
        stream_prefix=f"bench-listener:{uuid.uuid4().hex[:8]}",
        listener_client_id=f"bench-listener-{uuid.uuid4().hex[:8]}",
        listener_topics=[TOPIC_FILTER],
        listener_metrics_port=0,
    )


def drain_listener(settings: Settings, client: redis_lib.Redis, expected: int, timeout_s: float) -> float:
    """Start the listener on its session; returns the seconds until its stream holds `expected` entries."""
    start = time.perf_counter()
    with Listener(settings, redis_client=client):
        deadline = start + timeout_s
        while client.xlen(settings.stream_prefix) < expected:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"listener wrote {client.xlen(settings.stream_prefix)} of {expected}")
            time.sleep(0.02)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
