"""Free local TCP ports for the servers `up` starts, chosen where no outgoing connection can take them.

A port the kernel picks for `bind(host, 0)` comes from its ephemeral range, the same range it picks the
local port of every outgoing connection from. Between choosing such a port and the server binding it, a
connection to PostgreSQL or Redis (the daemon makes many) may take it, and the server fails with
"address already in use". Ports below that range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default, where the file cannot be read (other systems use 49152-65535, above it).
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
#: Chosen ports are at least this (below: well-known and registered services more often listen).
LOWEST_PORT = 10000
ATTEMPTS = 200


def tcp_socket(host: str) -> socket.socket:
    """An unbound TCP socket of `host`'s address family (IPv6 for an address with a colon)."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in source.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def candidate_ports(ephemeral: tuple[int, int]) -> range:
    """Ports outside the ephemeral range: below it, or above it where too few are below."""
    low, high = ephemeral
    if low - LOWEST_PORT >= 1000:
        return range(LOWEST_PORT, low)
    return range(high + 1, 65536)


def free_local_port(host: str = "127.0.0.1", candidates: range | None = None) -> int:
    """A port nothing listens on now, of `candidates` (default: outside the ephemeral range, see the
    module's docstring). Tried at random, so that processes choosing at the same time seldom try the same
    port."""
    candidates = candidate_ports(ephemeral_range()) if candidates is None else candidates
    for _ in range(ATTEMPTS if len(candidates) else 0):
        port = random.choice(candidates)
        with tcp_socket(host) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with tcp_socket(host) as sock:
        sock.bind((host, 0))  # every port outside the range is taken: the kernel's choice, race and all
        return int(sock.getsockname()[1])
