"""Free local TCP ports and waiting for a server to accept connections."""

from __future__ import annotations

import socket
import subprocess

from iot_etl.ports import free_local_port
from tests.support.waiting import wait_until

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

    def accepts() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {host}:{port} opened")
        return port_accepts(host, port)

    if not wait_until(accepts, timeout, interval_s=0.02):
        raise TimeoutError(f"{host}:{port} did not accept connections within {timeout} s")
