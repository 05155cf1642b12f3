"""`iot-etl up`: check, start every process of the pipeline, watch them, stop them all within seconds.

Children die with the supervisor even when it is SIGKILLed (see `iot_etl.reaper`), and one Dagster home
has at most one supervisor (`StackLock`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.broker import BrokerNotInstalledError
from iot_etl.child_output import Condenser, Quiet, logs_dir, open_log, pump
from iot_etl.code_location import location_state
from iot_etl.code_server import HOST as CODE_SERVER_HOST
from iot_etl.code_server import code_server_argv, wait_serving, write_workspace
from iot_etl.dagster_instance import create_instance_storage, dagster_env, dagster_home, write_instance_config
from iot_etl.embedded.brokers import broker_process, secure_broker_process
from iot_etl.embedded.decision import should_embed, should_embed_broker, should_embed_secure_broker
from iot_etl.embedded.postgres import postgres_process
from iot_etl.embedded.readiness import postgres_answers, redis_answers, wait_ready
from iot_etl.embedded.service import Address, ServiceProcess, services_dir, status_line, url_address
from iot_etl.embedded.valkey import redis_process
from iot_etl.pki_upkeep import CrlChange, CrlWatch, ensure_pki, layout_of
from iot_etl.ports import free_local_port
from iot_etl.reaper import Reaper, die_with_parent
from iot_etl.startup import (
    CannotStart,
    StackLock,
    check_ports,
    check_services,
    require_port_free,
    require_postgres,
    require_private_ui,
)
from iot_etl.state_dir import secure_state_dir
from iot_etl.window_report import WindowReporter

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 8.0
#: services stop last and may take longer: the broker writes its sessions and queues to disk on SIGTERM
#: (killed while writing, it comes back with its last autosave), PostgreSQL checkpoints
SERVICE_STOP_TIMEOUT_S = 30.0
# a code location loads in ~10 s on a quiet machine; under CPU load several times that
LOAD_TIMEOUT_S = 240.0
UI_BANNER = "Dagster UI: "


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    # services (embedded PostgreSQL/Redis, the broker) stop after the pipeline's processes
    service: bool = False
    # producers (the simulator) stop before the pipeline's processes: what they sent is acknowledged while
    # the listener still takes it
    producer: bool = False
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    log: Path | None = None
    # output through `up`: all of it into `log`, warnings and errors onto `up`'s output (child_output)
    pumped: bool = False


@dataclass
class Supervisor:
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
        create_instance_storage(home)
        return home

    def secure_state(self) -> None:
        """Everything `up` keeps is private to its user (see `iot_etl.state_dir`)."""
        home = dagster_home(self.settings)
        services = services_dir(self.settings)
        state = home.parent
        owned = [home, logs_dir(self.settings), services, state / "broker", self.settings.pki_dir.resolve()]
        secure_state_dir(state, owned)

    def start_services(self, with_broker: bool) -> None:
        """Start PostgreSQL, Redis and the broker where `up` is to run them; one line per service."""
        settings = self.settings
        self._start_url_service("postgresql", "database_url", 5432, postgres_answers, postgres_process)
        self._start_url_service("redis", "redis_url", 6379, redis_answers, redis_process)
        if settings.security:
            self._start_secure_broker(with_broker)
            return
        mqtt = Address(settings.mqtt_host, settings.mqtt_port)
        if with_broker:
            require_port_free(mqtt.host, mqtt.port, "IOT_MQTT_PORT")
        elif port_accepts(mqtt.host, mqtt.port):
            print(status_line("mqtt", "reachable", mqtt), flush=True)
            return
        elif not should_embed_broker(settings):
            print(status_line("mqtt", "down", mqtt, "the listener retries until a broker answers"))
            return
        try:
            broker = broker_process(settings)
        except BrokerNotInstalledError as exc:
            if with_broker:
                raise
            detail = f"no broker available: {exc}; the listener retries until one answers"
            print(status_line("mqtt", "down", mqtt, detail), flush=True)
            return
        self._start_service(broker, lambda: port_accepts(mqtt.host, mqtt.port))

    def prime_listener_session(self) -> None:
        """Make the listener's session at the broker before anything publishes: a broker drops a message
        no subscription matches (acknowledging it to its publisher), so without the session the simulator's
        first messages and whatever devices sent while `up` started were lost on a new broker (issue 27).
        One line when the session was made, or why it was not (the listener then subscribes itself)."""
        from ingest_listener.session import SessionError, prime_session
        from iot_core.errors import UserFacingError
        from iot_core.mqtt.endpoint import MqttEndpoint

        endpoint = MqttEndpoint.for_role(self.settings, "listener")
        address = Address(endpoint.host, endpoint.port)
        if not port_accepts(address.host, address.port):
            return  # a broker that is down was reported by start_services
        try:
            made = prime_session(self.settings)
        except (SessionError, UserFacingError) as exc:
            detail = f"no listener session yet ({exc}); the listener subscribes once it connects"
            print(status_line("mqtt", "no session", address, detail), flush=True)
            return
        if made:
            detail = "the listener's subscriptions: the broker keeps its messages from now on"
            print(status_line("mqtt", "session", address, detail), flush=True)

    def _start_secure_broker(self, with_broker: bool) -> None:
        """The broker of devices with certificates: `up`'s own Mosquitto where it is to run one, else the
        one answering on the service listener's address. Never the demo broker (no client certificates)."""
        settings = self.settings
        service = Address(settings.mqtt_service_host, settings.mqtt_service_port)
        if with_broker:
            require_port_free(settings.mqtt_host, settings.mqtt_tls_port, "IOT_MQTT_TLS_PORT")
            require_port_free(service.host, service.port, "IOT_MQTT_SERVICE_PORT")
        elif port_accepts(service.host, service.port):
            detail = "service listener; restart that broker after a revocation"
            print(status_line("mqtt", "reachable", service, detail), flush=True)
            return
        elif not should_embed_secure_broker(settings):
            print(status_line("mqtt", "down", service, "the listener retries until a broker answers"))
            return
        try:
            broker = secure_broker_process(settings)
        except BrokerNotInstalledError as exc:
            raise CannotStart(
                f"IOT_SECURITY needs Mosquitto ({exc}); the demo broker cannot verify client certificates"
            ) from None
        self.broker = self._start_service(broker, lambda: port_accepts(service.host, service.port))

    def restart_broker(self, why: str) -> None:
        """Stop `up`'s broker cleanly (it saves sessions and queues) and start it again with a freshly
        written configuration: open connections end, and every new one meets the current CRL and ACLs."""
        child = self.broker
        if child is None or child.process is None:
            return
        self._stop([child])
        self.children.remove(child)
        child.process = None
        service = Address(self.settings.mqtt_service_host, self.settings.mqtt_service_port)
        self.broker = self._start_service(
            secure_broker_process(self.settings), lambda: port_accepts(service.host, service.port)
        )
        self.say(f"broker restarted: {why}")

    def reload_broker(self, why: str) -> None:
        """SIGHUP: Mosquitto reads its CRL and ACL files again, for new connections."""
        child = self.broker
        if child is not None and child.process is not None and child.process.poll() is None:
            # the broker reads copies in its own folder: write them again, then have it read them
            secure_broker_process(self.settings)
            child.process.send_signal(signal.SIGHUP)
            self.say(f"broker reloaded: {why}")

    def _start_url_service(
        self,
        name: str,
        field_name: str,
        default_port: int,
        answers: Callable[[str], bool],
        make_process: Callable[[Settings], ServiceProcess],
    ) -> None:
        """The service at the URL setting `field_name`: reported reachable, else started here where `up`
        may run it, else reported down; one line either way."""
        url = getattr(self.settings, field_name).get_secret_value()
        address = url_address(url, default_port)
        if answers(url):
            print(status_line(name, "reachable", address), flush=True)
        elif should_embed(self.settings, field_name, address.host):
            service = make_process(self.settings)
            if service.settings is not None:  # the embedded server's credentials, for `up` and its children
                self.settings = service.settings
                url = getattr(self.settings, field_name).get_secret_value()
            self._start_service(service, lambda: answers(url))
        else:
            print(status_line(name, "down", address), flush=True)

    def _start_service(self, service: ServiceProcess, ready: Callable[[], bool]) -> Child:
        child = Child(
            service.name,
            service.argv,
            service=True,
            stop_signal=service.stop_signal,
            user=service.user,
            log=service.log,
        )
        self._spawn(child, dict(os.environ), announce=False)
        assert child.process is not None
        process = child.process
        wait_ready(ready, f"the embedded {service.name} (log {service.log})", lambda: process.poll() is None)
        print(status_line(service.name, "started", service.address, service.detail), flush=True)
        return child

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
            Child("listener", [sys.executable, "-m", "ingest_listener"]),
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
                env=env,
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

    def stop(self) -> None:
        """In the order that loses nothing the broker acknowledged: the producers (the simulator waits for
        the broker's acknowledgements of what it sent), then the pipeline's processes (the listener writes
        what it received, acknowledges it and disconnects; the broker keeps its session and queues for it
        what devices send meanwhile), then the services (the broker saves sessions and queues on SIGTERM).
        """
        self.stopping = True
        self._stop([c for c in self.children if c.producer])
        self._stop([c for c in self.children if not c.service and not c.producer])
        self._stop([c for c in self.children if c.service])
        if self.reaper is not None:
            self.reaper.close()

    def _stop(self, children: list[Child]) -> None:
        for child in children:
            if child.process and child.process.poll() is None:
                _signal_group(child.process, child.stop_signal)
        signalled = time.monotonic()
        for child in children:
            if not child.process:
                continue
            timeout_s = SERVICE_STOP_TIMEOUT_S if child.service else STOP_TIMEOUT_S
            try:
                child.process.wait(max(0.1, signalled + timeout_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {timeout_s:.0f} s: killing it")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(5)
            # whatever the child left in its group (run workers, code servers) goes too
            _signal_group(child.process, signal.SIGKILL)
        for child in children:
            if child.process:
                _wait_group_gone(child.process.pid, timeout_s=3.0)


def port_accepts(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """SIGKILL is asynchronous: return once no process of the group is left (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def run_up(settings: Settings, with_simulator: bool, with_broker: bool = False) -> int:
    """Check, start everything, print the UI address once the code location has loaded, and stop it all on
    Ctrl-C/SIGTERM or when a child dies. Whatever stops a start is one line on stderr and exit status 1."""
    supervisor = Supervisor(settings)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        require_private_ui(settings)
    except CannotStart as exc:
        return _cannot_start(exc)
    lock = StackLock(dagster_home(settings))
    try:
        lock.acquire()
        home = supervisor.prepare(with_broker)
    except (CannotStart, BrokerNotInstalledError) as exc:
        supervisor.stop()
        return _cannot_start(exc)
    except Exception as exc:  # a migration or Dagster's storage refusing: still one line
        supervisor.stop()
        return _cannot_start(CannotStart(f"{type(exc).__name__}: {exc}"))
    status = 0
    reporter: WindowReporter | None = None
    try:
        try:
            reporter = _window_reporter(supervisor, home)
            supervisor.start(home, with_simulator)
            supervisor.wait_for_code_location()
        except (CannotStart, BrokerNotInstalledError) as exc:
            status = _cannot_start(exc)
            supervisor.stopping = True
        if not supervisor.stopping:
            supervisor.say(f"\n{UI_BANNER}{supervisor.ui_url}  (Ctrl-C stops everything)\n")
            if reporter is not None:
                reporter.start()
        crl_watch = CrlWatch(layout_of(settings), settings.crl_days) if supervisor.broker else None
        while not supervisor.stopping:
            if crl_watch is not None:
                change = crl_watch.poll()
                if change is CrlChange.CHANGED:
                    supervisor.restart_broker("the revocation list changed")
                elif change is CrlChange.RENEWED:
                    supervisor.reload_broker("the revocation list was re-signed")
            dead = supervisor.exited()
            if dead:
                for child in dead:
                    print(
                        f"{child.name} exited with {child.process.returncode}; stopping everything",
                        file=sys.stderr,
                        flush=True,
                    )
                status = 1
                break
            time.sleep(0.5)
    finally:
        supervisor.say("stopping...")
        if reporter is not None:
            reporter.stop()
        supervisor.stop()
        lock.release()
        supervisor.say("stopped")
    return status


def _window_reporter(supervisor: Supervisor, home: Path) -> WindowReporter | None:
    """The window lines' source; if it cannot be set up the pipeline runs without them (one line says so)."""
    try:
        return WindowReporter(supervisor.settings, home, supervisor.ui_url, supervisor.say)
    except Exception as exc:
        supervisor.say(f"no window lines: {type(exc).__name__}: {' '.join(str(exc).split())}")
        return None


def _cannot_start(exc: BaseException) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"cannot start: {message}", file=sys.stderr, flush=True)
    return 1


def launch_up(
    env: Mapping[str, str],
    *args: str,
    timeout_s: float = 120.0,
    on_line: Callable[[str], object] | None = None,
    cwd: Path = REPO_ROOT,
) -> tuple[subprocess.Popen, str]:
    """Start `iot-etl up ARGS` in its own process group, as a user would, and return it once it printed the
    UI address, with everything it printed until then (benchmarks and tests drive whole stacks with it).
    Its later output is drained in the background so that it never blocks on a full pipe, each line
    handed to `on_line` if given. `cwd` holding a copy of the repository runs that copy's code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "iot_etl.cli", "up", *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + timeout_s
    while "Dagster UI: http://" not in banner:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"iot-etl up did not bring the UI up:\n{banner}")
        banner += line
    drain = process.stdout.read if on_line is None else lambda: [on_line(x) for x in process.stdout]
    threading.Thread(target=drain, daemon=True).start()
    return process, banner
