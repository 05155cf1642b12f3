"""What Mosquitto does with the QoS 1 messages of a shared-subscription member that dies mid-burst.

    .venv/bin/python -m bench.shared_subscription [--messages 5000] [--kill-at 1500] [--expiry 10]

A private Mosquitto with the project's generated configuration, two listener replicas as processes
(`python -m ingest_listener`, one group, each its own client id and persistent session) writing to the
local Redis under a prefix of its own. Two scenarios, each a QoS 1 burst with replica 1 SIGKILLed once
`--kill-at` messages are acknowledged to the publisher:

- **returns**: after the burst, how many acknowledged messages are missing from the streams (held for the
  dead member), whether the surviving member receives any of them within `--wait` seconds, and how many
  arrive (and how many flagged `dup`) once replica 1 starts again with the same replica name.
- **never returns**: the replicas' session expiry is `--expiry` seconds; replica 1 stays dead past it, a
  second burst follows (to whom does the group hand it?), then replica 1 starts again: how many of the
  first burst's missing messages ever arrive.

Prints one line per measurement, with the broker's version.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.mosquitto import PrivateMosquitto
from tests.support.replicas import Burst, ListenerProcess, delete_streams, stream_copies


def settle(prefix: str, quiet_s: float = 3.0, timeout_s: float = 120.0) -> dict[str, list[bool]]:
    """The stream copies once their number has not changed for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        copies = stream_copies(prefix)
        n = sum(len(v) for v in copies.values())
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return copies
        time.sleep(0.25)
    return stream_copies(prefix)


def summary(burst: Burst, copies: dict[str, list[bool]]) -> str:
    present = burst.acked & copies.keys()
    missing = burst.acked - copies.keys()
    dups = sum(flags.count(True) for flags in copies.values())
    extra = sum(len(flags) - 1 for flags in copies.values())
    first_missing = min((int(p[1:]) for p in missing), default=None)
    return (
        f"acked {len(burst.acked)}, in streams {len(present)}, missing {len(missing)} "
        f"(lowest index {first_missing}), second copies {extra}, entries flagged dup {dups}"
    )


def scenario_returns(args: argparse.Namespace, workdir: Path) -> None:
    prefix = f"iotrep_bench_{uuid.uuid4().hex[:8]}"
    try:
        with PrivateMosquitto() as broker:
            replicas = [
                ListenerProcess(broker, prefix, replica=str(i), group="bench", workdir=workdir)
                for i in range(2)
            ]
            for replica in replicas:
                replica.start()
            burst = Burst(broker, args.messages)
            t0 = time.monotonic()
            burst.run(when=(args.kill_at, replicas[1].kill))
            print(f"returns: burst of {args.messages} acknowledged in {time.monotonic() - t0:.1f} s")
            copies = settle(prefix)
            print(f"returns: replica 1 dead, survivor settled: {summary(burst, copies)}")
            time.sleep(args.wait)
            copies = stream_copies(prefix)
            print(f"returns: after {args.wait:.0f} s more with replica 1 dead: {summary(burst, copies)}")
            replicas[1].start()
            copies = settle(prefix)
            print(f"returns: replica 1 back with its id: {summary(burst, copies)}")
            for replica in replicas:
                replica.stop()
    finally:
        delete_streams(prefix)


def scenario_never_returns(args: argparse.Namespace, workdir: Path) -> None:
    prefix = f"iotrep_bench_{uuid.uuid4().hex[:8]}"
    expiry = str(args.expiry)
    try:
        with PrivateMosquitto() as broker:
            replicas = [
                ListenerProcess(
                    broker,
                    prefix,
                    replica=str(i),
                    group="bench",
                    workdir=workdir,
                    client_id="iotrep-expiry",
                    listener_session_expiry_s=expiry,
                )
                for i in range(2)
            ]
            for replica in replicas:
                replica.start()
            first = Burst(broker, args.messages)
            first.run(when=(args.kill_at, replicas[1].kill))
            copies = settle(prefix)
            print(f"never returns: replica 1 dead, survivor settled: {summary(first, copies)}")
            time.sleep(args.expiry + 5)
            second = Burst(broker, args.messages // 5, tag="n")
            second.run()
            copies = settle(prefix)
            print(
                f"never returns: {args.expiry + 5} s later (past the session expiry), a second burst: "
                f"{summary(second, copies)}"
            )
            replicas[1].start()
            copies = settle(prefix)
            print(f"never returns: replica 1 back after its session expired: {summary(first, copies)}")
            for replica in replicas:
                replica.stop()
    finally:
        delete_streams(prefix)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_subscription", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--kill-at", type=int, default=1500)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to watch the survivor")
    parser.add_argument("--expiry", type=int, default=10, help="session expiry of the second scenario")
    args = parser.parse_args(argv)
    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{version}; {args.messages} QoS 1 messages, replica 1 of 2 SIGKILLed at {args.kill_at} acked")
    with tempfile.TemporaryDirectory(prefix="iotrep-") as tmp:
        scenario_returns(args, Path(tmp))
        scenario_never_returns(args, Path(tmp))


if __name__ == "__main__":
    main()
