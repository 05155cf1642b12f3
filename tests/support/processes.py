"""Processes seen through /proc: who is in a process group, and waiting until pids are gone."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.waiting import wait_until


def group_members(pgids: set[int]) -> dict[int, str]:
    """pid -> command line of every live process whose process group is one of `pgids`."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            members[int(entry.name)] = cmdline.strip()
    return members


def descendants(root_pid: int) -> set[int]:
    """Every live process below `root_pid`, found by parent (children may lead process groups of their
    own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier += children
    return found


def kill_all(pids: set[int]) -> None:
    """SIGKILL whichever of `pids` is still alive (what a stopped process left behind)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Poll until none of `pids` is alive or the time is up; return those still alive."""
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout_s, interval_s=0.1)
    return {pid for pid in pids if alive(pid)}


def forkservers(root_pid: int) -> set[int]:
    """The multiprocessing forkservers below `root_pid` (the run launcher's): processes started with
    `multiprocessing.forkserver`'s command line whose parent was not (a forked run worker keeps it)."""
    lines: dict[int, str] = {}
    parents: dict[int, int] = {}
    for pid in descendants(root_pid):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # it ended while read
            continue
        lines[pid] = line
        parents[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
    marker = "multiprocessing.forkserver"
    return {
        pid for pid, line in lines.items() if marker in line and marker not in lines.get(parents[pid], "")
    }
