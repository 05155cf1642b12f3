"""Free local TCP ports and waiting for a server to accept connections."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

from iot_etl.ports import free_local_port

#: the product's: a port outside the kernel's ephemeral range, which no outgoing connection can take first
free_port = free_local_port


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until host:port accepts connections; fail early if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {host}:{port} opened")
        if port_accepts(host, port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout} s")


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it returns something true (-> True) or `timeout` passes (-> False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
