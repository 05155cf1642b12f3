"""`PrivatePostgres`: a PostgreSQL 15 server of a test's own, to stop and start under a running pipeline.

Why not the system server: an outage test stops the database; nothing else may depend on it.

Usage::

    with PrivatePostgres() as pg:       # initdb in a temp dir, a free port, trust authentication
        url = pg.url("iot_test")         # postgresql://postgres@127.0.0.1:PORT/iot_test
        pg.stop()                        # outage (fast shutdown); the data directory is kept ...
        pg.start()                       # ... and the same cluster comes back
        pg.settings["shared_preload_libraries"] = "timescaledb"
        pg.restart()                     # the same cluster with other server settings

The server runs as the `postgres` user (PostgreSQL refuses to run as root), from the binaries in
`IOT_TEST_PG_BIN` (default `/usr/lib/postgresql/15/bin`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.ports import wait_for_port
from tests.support.private_server import PrivateServer

PG_BIN = Path(os.environ.get("IOT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _as_postgres(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = argv if os.geteuid() != 0 else ["runuser", "-u", PG_USER, "--", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class PrivatePostgres(PrivateServer):
    """An initdb'd cluster in a temporary directory, started with `pg_ctl` on a free port."""

    name = "postgres"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, settings: dict[str, str] | None = None
    ) -> None:
        super().__init__(host=host, port=port, log_name="postgres.log")
        #: Server settings (`-c name=value`) of every start; change them and `restart()` to apply them.
        self.settings = dict(settings or {})
        self.data_dir = self.workdir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.workdir, PG_USER, PG_USER)
        self._initialised = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        result = _as_postgres([str(PG_BIN / "pg_ctl"), "status", "-D", str(self.data_dir)], timeout=30)
        return result.returncode == 0

    def start(self, timeout: float = 120.0) -> PrivatePostgres:
        """initdb on first use, then start the server and wait until it accepts connections."""
        if not self._initialised:
            init = _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
                timeout=timeout,
            )
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
            self._initialised = True
        options = f"-p {self.port} -c listen_addresses={self.host} -k {self.workdir} -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        started = _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                options,
            ],
            timeout=timeout + 10,
        )
        if started.returncode != 0:
            raise RuntimeError(f"postgres did not start: {started.stderr}\n{self.log_text()[-2000:]}")
        wait_for_port(self.host, self.port, timeout=timeout)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown: open connections are cut, the data directory stays for `start()`."""
        if not self._initialised:
            return
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )

    def __del__(self) -> None:  # last resort: never leave a server behind
        with contextlib.suppress(Exception):
            if self.data_dir.exists():
                self.stop(timeout=10)
