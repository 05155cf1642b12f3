"""bench.stack_memory reads a process tree's memory from /proc: RSS counts shared pages in every process
that maps them, PSS divides them among those processes."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.stack_memory import report, tree_memory


def test_a_forked_childs_shared_pages_count_fully_in_rss_and_halved_in_pss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        processes = tree_memory(os.getpid())
        me = next(p for p in processes if p.pid == os.getpid())
        assert me.group == "supervisor"  # the tree's root
        assert child.pid in {p.pid for p in processes}
        for p in processes:
            assert p.rss >= p.pss >= p.uss > 0, p
        # the interpreter's library is mapped by both: each RSS counts it, the PSS sum does not twice
        assert sum(p.pss for p in processes) < sum(p.rss for p in processes)
        assert report(processes).splitlines()[-1].startswith(f"sum of {len(processes)}")
    finally:
        child.kill()
        child.wait()
