"""Where a drain's CPU went: shares of py-spy's collapsed stacks (`bench.listener --profile DIR`).

    .venv/bin/python -m bench.stacks DIR/listener-1.txt [--top 20] [--match REGEX]

Counts the samples of the threads that run during a drain (the main thread only starts the subscriber and
waits, so its samples, mostly imports, are left out), then prints each thread's share, the functions with
the most samples of their own ("self") and with the most samples anywhere on the stack ("inclusive"),
optionally only those whose name matches `--match`. py-spy records only threads that are running, not those
waiting in a system call or for the GIL.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r" \((?:[^()]*/)?([^/()]+):\d+\)$")


def function(frame: str) -> str:
    """`Client._loop (paho/mqtt/client.py:1667)` -> `Client._loop (client.py)`: lines folded together."""
    return _LOCATION.sub(r" (\1)", frame)


def load(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Samples per thread, per function of its own, per function on the stack; and all samples counted."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("thread") or "MainThread" in frames[0] or frames[0].endswith(")"):
            continue  # the main thread (named or not yet), and lines that are not stacks
        samples = int(count)
        total += samples
        threads[frames[0].partition(": ")[2]] += samples
        names = [function(frame) for frame in frames[1:]]
        if names:
            own[names[-1]] += samples
        for name in set(names):
            anywhere[name] += samples
    return threads, own, anywhere, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--match", default="", help="only functions whose name matches this")
    args = parser.parse_args(argv)
    threads, own, anywhere, total = load(args.stacks)
    print(f"{total} samples of the drain's threads")
    for name, samples in threads.most_common():
        print(f"  {samples / total:6.1%}  thread {name}")
    for title, counts in (("self", own), ("inclusive", anywhere)):
        print(f"{title}:")
        shown = [(n, c) for n, c in counts.most_common() if re.search(args.match, n)][: args.top]
        for name, samples in shown:
            print(f"  {samples / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
