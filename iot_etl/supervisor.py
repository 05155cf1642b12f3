"""`iot-etl up`'s supervisor: check, start every process of the pipeline, watch them, stop them all
within seconds (the services it starts: `iot_etl.up_services`; the command's course: `iot_etl.up`).

Children die with the supervisor even when it is SIGKILLed (see `iot_etl.reaper`), and one Dagster home
has at most one supervisor (`StackLock`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.child_output import Condenser, Quiet, logs_dir, open_log, pump
from iot_etl.children import REPO_ROOT, Child, stop_children
from iot_etl.code_location import location_state
from iot_etl.code_server import HOST as CODE_SERVER_HOST
from iot_etl.code_server import code_server_argv, wait_serving, write_workspace
from iot_etl.dagster_instance import (
    create_instance_storage_apart,
    dagster_env,
    dagster_home,
    write_instance_config,
)
from iot_etl.embedded.service import services_dir, status_line
from iot_etl.listener_replicas import listener_children, may_restart
from iot_etl.pki_upkeep import ensure_pki
from iot_etl.ports import free_local_port
from iot_etl.reaper import Reaper, die_with_parent
from iot_etl.startup import CannotStart, check_ports, check_services, require_postgres
from iot_etl.state_dir import secure_state_dir
from iot_etl.up_services import ServiceStarts

# a code location loads in ~10 s on a quiet machine; under CPU load several times that
LOAD_TIMEOUT_S = 240.0


@dataclass
class Supervisor(ServiceStarts):
    """Children run in their own process groups so that a stop reaches their children too (run workers)."""

    settings: Settings
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    reaper: Reaper | None = None
    #: `up`'s own broker in security mode: restarted on a revocation, reloaded on a renewed CRL
    broker: Child | None = None
    _say_lock: threading.Lock = field(default_factory=threading.Lock)
    _quiet: Quiet = field(init=False)

    def __post_init__(self) -> None:
        self._quiet = Quiet(self.say)

    def say(self, line: str) -> None:
        """One line on `up`'s output; threads (output pumps, the window report) never interleave."""
        with self._say_lock:
            print(line, flush=True)

    def env(self, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(dagster_env(self.settings))
        env["DAGSTER_HOME"] = str(home)
        # the URL `up` connects with, which holds the embedded PostgreSQL's password when `up` runs it
        env["IOT_DATABASE_URL"] = self.settings.database_url.get_secret_value()
        # children run in the repository, which need not be the folder `up` was started in
        env["IOT_PKI_DIR"] = str(self.settings.pki_dir.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def prepare(self, with_broker: bool) -> Path:
        """Everything before the first child: ports, services, migrations, Dagster's storage."""
        from iot_etl.db_roles import ensure_roles
        from iot_etl.migrate import apply_migrations, ensure_database

        check_ports(self.settings)
        self.secure_state()
        if self.settings.security:
            for line in ensure_pki(self.settings):
                self.say(status_line("pki", "ready", self.settings.pki_dir.resolve(), line))
        if self.reaper is None:
            self.reaper = Reaper()
        self.start_services(with_broker)
        self.prime_listener_session()
        check_services(self.settings)
        # one line for the database instead of the migrations' log line each
        logging.getLogger("iot_etl.migrate").setLevel(logging.WARNING)
        owner = self.settings.owner_url.get_secret_value()
        created = ensure_database(owner)
        applied = apply_migrations(owner)
        done = f"{'created, ' if created else ''}{len(applied)} migration(s) applied"
        self.say(status_line("database", "ready", self.settings.database_name(), done))
        dagster = self.settings.dagster_pg_url
        if dagster:
            ensure_database(dagster.get_secret_value())
        if self.settings.database_owner_url or self.settings.database_reader_url:
            reader = self.settings.database_reader_url
            for line in ensure_roles(
                owner,
                self.settings.database_url.get_secret_value(),
                reader.get_secret_value() if reader else None,
                dagster.get_secret_value() if dagster else None,
            ):
                self.say(status_line("database", "roles", self.settings.database_name(), line))
            # the pipeline's own role must get in now that it exists
            require_postgres(self.settings.database_url.get_secret_value(), "IOT_DATABASE_URL")
        home = write_instance_config(self.settings)
        # Dagster's storage set-up logs each of its alembic steps at INFO: nothing a user acts on
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Dagster resolves the password reference of dagster.yaml from this process's environment
        os.environ.update(dagster_env(self.settings))
        create_instance_storage_apart(home)
        return home

    def secure_state(self) -> None:
        """Everything `up` keeps is private to its user (see `iot_etl.state_dir`)."""
        home = dagster_home(self.settings)
        services = services_dir(self.settings)
        state = home.parent
        owned = [home, logs_dir(self.settings), services, state / "broker", self.settings.pki_dir.resolve()]
        secure_state_dir(state, owned)

    def start(self, home: Path, with_simulator: bool) -> None:
        bin_dir = Path(sys.executable).parent
        env = self.env(home)
        logs = logs_dir(self.settings)
        port = free_local_port(CODE_SERVER_HOST)
        code_server = Child("code-server", code_server_argv(port, REPO_ROOT), log=logs / "code-server.log")
        code_server.pumped = True
        self._spawn(code_server, env)
        process = code_server.process
        assert process is not None
        try:
            wait_serving(port, LOAD_TIMEOUT_S, lambda: process.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            raise CannotStart(f"{exc} (its log: {code_server.log})") from None
        workspace = str(write_workspace(home / "workspace.yaml", port))
        self.children += [
            *listener_children(self.settings),
            Child("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]),
            Child(
                "dagster-webserver",
                [
                    str(bin_dir / "dagster-webserver"),
                    "-w",
                    workspace,
                    "-h",
                    self.settings.webserver_host,
                    "-p",
                    str(self.settings.webserver_port),
                ],
            ),
        ]
        if with_simulator:
            self.children.append(Child("simulator", [sys.executable, "-m", "simulator"], producer=True))
        for child in self.children:
            if child.process is None:
                child.log, child.pumped = logs / f"{child.name}.log", True
                self._spawn(child, env)
        names = ", ".join(c.name for c in self.children if c.pumped)
        self.say(f"logs of {names} (with Dagster's runs): {logs}/")

    def _spawn(self, child: Child, env: dict[str, str], announce: bool = True) -> None:
        assert self.reaper is not None
        with contextlib.ExitStack() as stack:
            log = None
            if child.pumped:
                log = subprocess.PIPE
            elif child.log is not None:
                log = stack.enter_context(open(child.log, "ab"))
            # the parent-death signal is requested after the user switch (`user=`), which would clear it
            child.process = subprocess.Popen(
                child.argv,
                cwd=REPO_ROOT,
                env={**env, **child.env},
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                user=child.user,
                start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )
        if child.pumped:
            assert child.log is not None and child.process.stdout is not None
            threading.Thread(
                target=pump,
                args=(child.process.stdout, open_log(child.log), Condenser(child.name), self._quiet),
                name=f"output-{child.name}",
                daemon=True,
            ).start()
        child.started_at = time.monotonic()
        self.reaper.watch(child.process.pid)
        if child not in self.children:
            self.children.append(child)
        if announce:
            self.say(f"started {child.name} (pid {child.process.pid})")

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.webserver_host}:{self.settings.webserver_port}"

    def wait_for_code_location(self, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        """Return once the webserver has loaded the code location; raise CannotStart with the loading
        error, or when a child exits or the time is up first."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping:
            dead = self.exited()
            if dead:
                child = dead[0]
                raise CannotStart(f"{child.name} exited with {child.process.returncode} while starting")
            try:
                state = location_state(self.ui_url)
            except (OSError, ValueError, KeyError):
                state = None
            if state is not None and state.error:
                raise CannotStart(f"the code location failed to load: {state.error}")
            if state is not None and state.loaded:
                return
            if time.monotonic() > deadline:
                raise CannotStart(f"the code location did not load within {timeout_s:.0f} s")
            time.sleep(0.5)

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def restart_replicas(self, dead: list[Child], home: Path) -> list[Child]:
        """Start again each dead listener replica that ran long enough (`may_restart`), under its own name;
        return the dead children that were not."""
        left = []
        for child in dead:
            if self.stopping or not may_restart(child):
                left.append(child)
                continue
            assert child.process is not None
            self.say(f"{child.name} exited with {child.process.returncode}; starting it again")
            self._spawn(child, self.env(home))
        return left

    def stop(self) -> None:
        """In the order that loses nothing the broker acknowledged: the producers (the simulator waits for
        the broker's acknowledgements of what it sent), then the pipeline's processes (the listener writes
        what it received, acknowledges it and disconnects; the broker keeps its session and queues for it
        what devices send meanwhile), then the services (the broker saves sessions and queues on SIGTERM).
        """
        self.stopping = True
        stop_children([c for c in self.children if c.producer], self.say)
        stop_children([c for c in self.children if not c.service and not c.producer], self.say)
        stop_children([c for c in self.children if c.service], self.say)
        if self.reaper is not None:
            self.reaper.close()
