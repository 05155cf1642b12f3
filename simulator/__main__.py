"""`python -m simulator` / `iot-etl simulate`: run the simulated fleet and print what it sent.

Without --count or --duration it runs until Ctrl-C or SIGTERM (that is how `iot-etl up` runs it); either
way the report table is printed at the end. With --certs-dir every device connects on its own, with its
certificate, to the device listener.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import click

from iot_core.errors import UserFacingError
from iot_core.logs import configure_logging
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import PublishError
from iot_core.progress import Advance, progress_bar
from iot_core.settings import get_settings
from simulator.expected import KINDS
from simulator.run import run_simulation


def _parse_kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"choose from {','.join(KINDS)} (comma-separated), got {value!r}")
    return kinds


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C/SIGTERM end the run cleanly, report printed (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("simulate")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Messages per second (default IOT_SIM_RATE).",
)
@click.option("--count", type=click.IntRange(min=0), default=None, help="Stop after this many messages.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=None, help="Random seed (default IOT_SIM_SEED).")
@click.option(
    "--bad-share",
    type=click.FloatRange(0, 1),
    default=None,
    help="Share of deliberately bad messages (default IOT_SIM_BAD_SHARE).",
)
@click.option(
    "--kinds",
    default=",".join(KINDS),
    show_default=True,
    callback=_parse_kinds,
    help="Message formats to send, comma-separated.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="Devices per format for plain and event (default IOT_SIM_DEVICES); F2 is a fixed fleet.",
)
@click.option(
    "--qos", type=click.IntRange(0, 2), default=1, show_default=True, help="MQTT QoS of every message."
)
@click.option(
    "--certs-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Every device connects on its own with DIR/devices/<id>.pem/.key (trusting DIR/ca-chain.pem) "
    "to the device listener IOT_MQTT_HOST:IOT_MQTT_TLS_PORT; e.g. IOT_PKI_DIR.",
)
def simulate_command(
    rate: float | None,
    count: int | None,
    duration: float | None,
    seed: int | None,
    bad_share: float | None,
    kinds: tuple[str, ...],
    devices: int | None,
    qos: int,
    certs_dir: Path | None,
) -> None:
    """A simulated fleet publishing all three formats (with a share of bad messages); prints what it sent."""
    settings = get_settings()
    stop = threading.Event()
    until = f"{count} messages" if count is not None else ""
    if duration is not None:
        until = f"{until} or {duration:g} s" if until else f"{duration:g} s"
    if certs_dir is not None:
        to = f"{settings.mqtt_host}:{settings.mqtt_tls_port} (one connection per device)"
    else:
        to = MqttEndpoint.for_role(settings, "simulator").address
    banner = (
        f"simulating {','.join(kinds)} at {rate or settings.sim_rate:g} msg/s to {to} "
        f"for {until or 'ever (Ctrl-C stops)'}"
    )
    with ExitStack() as stack, _stop_on_signals(stop):
        advance: list[Advance] = []

        def connected() -> None:  # said once the broker is there; a bar when a count is known
            click.echo(banner, err=True)
            if count is not None:
                advance.append(stack.enter_context(progress_bar("publishing", total=count)))

        try:
            report = run_simulation(
                settings,
                rate=rate if rate is not None else settings.sim_rate,
                count=count,
                duration_s=duration,
                seed=seed if seed is not None else settings.sim_seed,
                bad_share=bad_share if bad_share is not None else settings.sim_bad_share,
                kinds=kinds,
                devices=devices if devices is not None else settings.sim_devices,
                qos=qos,
                stop=stop,
                on_connected=connected,
                on_sent=lambda _message: advance[0]() if advance else None,
                certs_dir=certs_dir,
            )
        except PublishError as exc:
            raise click.ClickException(str(exc)) from exc
        except UserFacingError as exc:  # a missing certificate or CA file: nothing was sent
            raise click.UsageError(str(exc)) from exc
    click.echo(report.table())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with `argv` (default: the process arguments); returns the exit status."""
    configure_logging()
    try:
        simulate_command.main(args=list(argv) if argv is not None else None, prog_name="python -m simulator")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
