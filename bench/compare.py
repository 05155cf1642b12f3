"""The product end to end on the fleet's mix, and against naive MQTT -> PostgreSQL writers on plain messages.

    .venv/bin/python -m bench.compare --messages 100000 --rate 2000 --duration 60 --repeat 3
    .venv/bin/python -m bench.compare --kinds plain ...     # the peer comparison

For every repetition, mode (burst: all messages at once; sustained: --rate msg/s for --duration s) and
system (the product via `iot-etl up --no-simulator`, a paho + COPY batch writer, batched executemany,
per-message INSERT with autocommit), in an order rotated per repetition: a private Mosquitto with the
project's configuration, a scratch database, the system, then QoS 1 messages from several publisher
processes. By default they are the simulator's fleet (plain metrics, events with arrays, F2 frames,
`--bad-share` of them bad), which only the product stores; `--kinds plain` publishes plain-metric messages
that the baselines store too. Prints medians over repetitions and writes every run to --json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.e2e.messages import BAD_SHARE, MIX, PLAIN
from bench.e2e.report import medians, table, write_json
from bench.e2e.systems import BASELINES, PRODUCT_VARIANTS, system
from bench.e2e.trial import Load, run_trial
from iot_core.settings import Settings

ALL_SYSTEMS = ("product", *BASELINES)
#: Every name `--systems` takes.
KNOWN_SYSTEMS = ("product", *PRODUCT_VARIANTS, *BASELINES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="burst: messages published at once")
    parser.add_argument("--rate", type=float, default=2_000, help="sustained: messages per second")
    parser.add_argument("--duration", type=float, default=60, help="sustained: seconds")
    parser.add_argument("--modes", default="burst,sustained", help="comma-separated: burst, sustained")
    parser.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated, of: {', '.join(KNOWN_SYSTEMS)} (default: all for plain, else product)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(MIX),
        help="the simulator's formats to publish (plain,event,f2); `plain` alone: the peers' plain messages",
    )
    parser.add_argument("--bad-share", type=float, default=BAD_SHARE, help="share of bad messages (fleet)")
    parser.add_argument("--window", type=int, default=10, choices=(10, 60), help="product's window seconds")
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (medians reported)")
    parser.add_argument("--json", type=Path, default=Path("bench-compare.json"), help="results file")
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds.split(","))
    if args.systems is None:
        args.systems = ",".join(ALL_SYSTEMS if kinds == PLAIN else ("product",))
    peers = [name for name in args.systems.split(",") if name in BASELINES]
    if peers and kinds != PLAIN:
        parser.error(f"{', '.join(peers)} store plain messages only: add --kinds plain")
    return args


def loads(args: argparse.Namespace) -> list[Load]:
    chosen = []
    kinds = tuple(args.kinds.split(","))
    for mode in args.modes.split(","):
        if mode == "burst":
            chosen.append(Load("burst", args.messages, None, args.publishers, kinds, args.bad_share))
        elif mode == "sustained":
            count = int(args.rate * args.duration)
            chosen.append(Load("sustained", count, args.rate, args.publishers, kinds, args.bad_share))
        else:
            raise SystemExit(f"unknown mode {mode!r}: choose burst or sustained")
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings()
    names = args.systems.split(",")
    results = []
    for repetition in range(args.repeat):
        order = names[repetition % len(names) :] + names[: repetition % len(names)]
        for load in loads(args):
            for name in order:
                print(f"repetition {repetition + 1}/{args.repeat}: {load.mode} {name} ...", flush=True)
                result = run_trial(settings, system(name, args.window, load.fleet), load, repetition)
                results.append(result)
                print(
                    f"  {result['rows_per_s']:,.0f} rows/s, p50 {result['latency_p50_s']} s, "
                    f"lost {result['lost']}, publisher {result['publish_rate']:,.0f} msg/s",
                    flush=True,
                )
                write_json(args.json, {k: str(v) for k, v in vars(args).items()}, results)
    print(table(medians(results)))
    print(f"\nJSON: {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
