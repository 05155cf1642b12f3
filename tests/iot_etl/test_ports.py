"""Ports for the servers `up` starts come from outside the kernel's ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

from iot_etl.ports import (
    DEFAULT_EPHEMERAL_RANGE,
    LOWEST_PORT,
    candidate_ports,
    ephemeral_range,
    free_local_port,
)


def listening(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_the_range_is_read_from_the_kernel_and_defaults_where_it_cannot_be(tmp_path: Path) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("40000\t50000\n")
    assert ephemeral_range(source) == (40000, 50000)
    source.write_text("garbage")
    assert ephemeral_range(source) == DEFAULT_EPHEMERAL_RANGE
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL_RANGE


def test_candidates_lie_below_the_range_or_above_it_when_too_few_are_below() -> None:
    assert candidate_ports((32768, 60999)) == range(LOWEST_PORT, 32768)
    assert candidate_ports((LOWEST_PORT + 10, 50000)) == range(50001, 65536)


def test_a_chosen_port_is_outside_this_machines_range_and_can_be_bound() -> None:
    low, high = ephemeral_range()
    for _ in range(20):
        port = free_local_port()
        assert not low <= port <= high
        listening(port).close()


def test_a_port_something_listens_on_is_skipped_and_with_none_left_the_kernel_chooses() -> None:
    first = free_local_port()
    second = first + 1 if first + 1 < 65536 else first - 1
    pair = range(min(first, second), max(first, second) + 1)
    with listening(first):
        for _ in range(10):
            assert free_local_port(candidates=pair) == second
        with listening(second):
            assert free_local_port(candidates=pair) not in pair
