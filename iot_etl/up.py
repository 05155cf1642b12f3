"""`iot-etl up` from start to stop: the lock, the checks and the start, the UI address once the code
location has loaded, the watch (children, the revocation list) and the stop. Whatever stops a start is
one line on stderr and exit status 1."""

from __future__ import annotations

import signal
import sys
import time

from iot_core.settings import Settings
from iot_etl.broker import BrokerNotInstalledError
from iot_etl.dagster_instance import dagster_home
from iot_etl.pki_upkeep import CrlChange, CrlWatch, layout_of
from iot_etl.startup import CannotStart, StackLock, require_private_ui
from iot_etl.supervisor import Supervisor
from iot_etl.window_report import WindowReporter

UI_BANNER = "Dagster UI: "


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
            reporter = _window_reporter(supervisor)
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
            dead = supervisor.restart_replicas(supervisor.exited(), home)
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


def _window_reporter(supervisor: Supervisor) -> WindowReporter | None:
    """The window lines' source; if it cannot be set up the pipeline runs without them (one line says so)."""
    try:
        return WindowReporter(supervisor.settings, supervisor.ui_url, supervisor.say)
    except Exception as exc:
        supervisor.say(f"no window lines: {type(exc).__name__}: {' '.join(str(exc).split())}")
        return None


def _cannot_start(exc: BaseException) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"cannot start: {message}", file=sys.stderr, flush=True)
    return 1
