"""The `iot-etl` command: up, listen, simulate, db migrate, status, backfill, lineage, broker-config.

A failing command prints one line on stderr (what happened, what to do) and exits non-zero; `--debug`
shows the traceback instead (see `iot_etl.errors`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from iot_etl.errors import CommandFailed
from iot_etl.lazy_commands import LazyCommand, LazyGroup

if TYPE_CHECKING:
    from iot_core.settings import Settings
    from iot_etl.backfill import BackfillState

#: Commands imported only when they run: `iot-etl --help` lists them without paho, cryptography or rich.
LAZY_COMMANDS = {
    "simulate": LazyCommand(
        "simulator.__main__:simulate_command",
        "A simulated fleet publishing all three formats (with a share of bad messages); prints what it sent.",
    ),
    "certs": LazyCommand(
        "iot_etl.certs:certs",
        "The device CA and service CA, and the certificates they issue (in IOT_PKI_DIR).",
    ),
}


def get_settings() -> Settings:
    """The settings, imported when a command needs them (pydantic is not loaded for `--help`)."""
    from iot_core.settings import get_settings as load

    return load()


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--debug", is_flag=True, help="Debug logging, and a traceback when a command fails.")
def main(verbose: bool, debug: bool) -> None:
    """MQTT -> Redis streams -> Dagster micro-batches -> TimescaleDB/PostgreSQL."""
    from iot_core.logs import configure_logging

    configure_logging(logging.DEBUG if verbose or debug else logging.INFO)


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
def db_migrate() -> None:
    """As the schema owner (IOT_DATABASE_OWNER_URL): create the database if needed, apply pending
    migrations from sql/, then create the writer and reader roles of IOT_DATABASE_URL and
    IOT_DATABASE_READER_URL where missing and grant them least privilege."""
    from iot_core.progress import progress_bar
    from iot_etl.db_roles import database_errors, ensure_roles
    from iot_etl.migrate import apply_migrations, ensure_database

    settings = get_settings()
    owner = settings.owner_url.get_secret_value()
    owner_setting = "IOT_DATABASE_OWNER_URL" if settings.database_owner_url else "IOT_DATABASE_URL"
    dagster = settings.dagster_pg_url.get_secret_value() if settings.dagster_pg_url else None
    reader = settings.database_reader_url.get_secret_value() if settings.database_reader_url else None
    with database_errors(owner, owner_setting):
        created = ensure_database(owner)
        adopted: list[str] = []
        with progress_bar("migrating", total=None) as advance:
            applied = apply_migrations(
                owner,
                progress=lambda done, pending: advance(completed=done, total=pending),
                report=adopted.append,
            )
    click.echo(
        f"database {settings.database_name()}: {'created, ' if created else ''}"
        f"{len(applied)} migration(s) applied{': ' + ', '.join(applied) if applied else ''}"
    )
    for line in adopted:
        click.echo(f"timescaledb: {line}")
    if dagster:
        with database_errors(dagster, "IOT_DAGSTER_PG_URL"):
            if ensure_database(dagster):
                click.echo("created Dagster's storage database")
    for line in ensure_roles(owner, settings.database_url.get_secret_value(), reader, dagster):
        click.echo(line)


@main.command("dagster-instance")
@click.option(
    "--run-launcher",
    "run_launcher_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with the run launcher block (module, class, config) to use instead of the one "
    "IOT_DAGSTER_RUN_LAUNCHER selects, e.g. deploy/docker-launcher/run_launcher.yaml.",
)
def dagster_instance(run_launcher_file: Path | None) -> None:
    """Write dagster.yaml into IOT_DAGSTER_HOME (SQLite, or PostgreSQL with IOT_DAGSTER_PG_URL)."""
    from iot_etl.dagster_instance import (
        PG_PASSWORD_ENV,
        dagster_env,
        load_run_launcher,
        write_instance_config,
    )
    from iot_etl.state_dir import restrict_umask

    restrict_umask()
    settings = get_settings()
    launcher = load_run_launcher(run_launcher_file) if run_launcher_file else None
    click.echo(f"DAGSTER_HOME={write_instance_config(settings, launcher)}")
    if dagster_env(settings):
        click.echo(f"Dagster reads the storage password from {PG_PASSWORD_ENV}: set it where Dagster runs")


@main.command()
@click.option("--no-simulator", is_flag=True, help="Do not start simulated devices.")
@click.option(
    "--with-broker",
    is_flag=True,
    help="Also run Mosquitto with the project's configuration on IOT_MQTT_HOST:IOT_MQTT_PORT "
    "(without Mosquitto on PATH, the demo broker).",
)
def up(no_simulator: bool, with_broker: bool) -> None:
    """Check the services, migrate, then run the listener, Dagster (webserver + daemon) and the simulator
    until Ctrl-C; the UI address is printed once the code location has loaded."""
    from iot_etl.state_dir import restrict_umask
    from iot_etl.up import run_up

    restrict_umask()
    sys.exit(run_up(get_settings(), with_simulator=not no_simulator, with_broker=with_broker))


@main.command()
def listen() -> None:
    """Run the MQTT -> Redis stream listener until SIGTERM/Ctrl-C."""
    from ingest_listener.__main__ import run as run_listener

    sys.exit(run_listener(get_settings()))


@main.command()
def status() -> None:
    """Counts in the database and streams, TimescaleDB's jobs, and the broker's dropped-message counter;
    exits non-zero when a part does not answer or a TimescaleDB job failed its last run."""
    from iot_core.progress import waiting_for
    from iot_etl.status import collect, problems, render

    settings = get_settings()
    with waiting_for("status") as waiting:
        lines = collect(settings, waiting)
    click.echo(render(lines))
    what, todo = problems(lines, settings)
    if what:
        raise CommandFailed("; ".join(what), "; ".join(todo))


@main.command()
@click.option(
    "--from", "first", required=True, help="First hour (UTC), e.g. 2026-03-01T14 or 2026-03-01-14:00."
)
@click.option("--to", "last", required=True, help="Last hour (UTC), included.")
@click.option("--no-wait", is_flag=True, help="Launch and print the backfill's id without following it.")
def backfill(first: str, last: str, no_wait: bool) -> None:
    """Re-process whole hours from the raw archive: a Dagster backfill of raw_messages, telemetry and
    hourly_rollups over the hour partitions, launched through the running webserver and followed to its
    end (its runs' checks included)."""
    from iot_core.progress import progress_bar, shown
    from iot_etl.backfill import ASSETS, DagsterUi, follow, hour_keys, launch, parse_hour, ui_url

    settings = get_settings()
    keys = hour_keys(settings, parse_hour(first), parse_hour(last))
    base = ui_url(settings)
    ui = DagsterUi(base)
    ui.wait_loaded()
    backfill_id = launch(ui, keys, f"iot-etl backfill {keys[0]}..{keys[-1]}")
    link = f"{base}/runs/b/{backfill_id}?tab=partitions"
    click.echo(
        f"backfill {backfill_id}: {len(keys)} hour(s) {keys[0]}..{keys[-1]} of {', '.join(ASSETS)}; {link}"
    )
    if no_wait:
        return
    # one step more than the hour-assets: the bar is full when the backfill has ended, its checks run
    targeted = len(keys) * len(ASSETS)
    with progress_bar("backfill", total=targeted + 1) as advance:
        to_terminal = shown()

        def on_change(now: BackfillState) -> None:
            advance(
                completed=now.done + now.failed + (1 if now.finished else 0),
                total=(now.targeted or targeted) + 1,
                description=now.waiting_for() or f"backfill {now.status.lower()}",
            )
            if not to_terminal:
                click.echo(now.line(), err=True)

        try:
            end = follow(ui, backfill_id, on_change)
        except KeyboardInterrupt:
            raise CommandFailed(
                f"stopped following backfill {backfill_id}; it goes on in Dagster",
                f"follow or cancel it at {link}",
                exit_code=130,
            ) from None
    if not end.succeeded:
        raise CommandFailed(
            f"backfill {backfill_id} ended {end.status}: {end.failed} of {end.targeted} hour-assets failed"
            + (f" ({end.error.splitlines()[0]})" if end.error else ""),
            f"see its runs at {link}",
        )
    click.echo(f"backfill {backfill_id} completed: {end.done} of {end.targeted} hour-assets materialized")


@main.command()
@click.option("--device", help="Device key (e.g. a1b2c3d4, esp32-01, f2-aabbccddee01).")
@click.option("--metric", help="Metric name (F2: port.component.datapoint, e.g. J1.sensor-1.temperature).")
@click.option("--at", "at", help="Reading time (ISO-8601; naive = UTC): the nearest reading is traced.")
@click.option("--event-id", help="Event id (with --device).")
@click.option("--raw-id", type=int, help="Archived message id: what it became.")
def lineage(
    device: str | None, metric: str | None, at: str | None, event_id: str | None, raw_id: int | None
) -> None:
    """Trace a stored value to its raw message, batch and Dagster run (with the run's URL), or a raw
    message (--raw-id) to the rows or rejection it became."""
    from datetime import UTC, datetime

    from iot_etl.lineage import lineage as trace

    when = None
    if at:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    try:
        text = trace(get_settings(), device=device, metric=metric, at=when, event_id=event_id, raw_id=raw_id)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if text is None:
        click.echo("not found", err=True)
        sys.exit(1)
    click.echo(text)


@main.command()
def broker() -> None:
    """Run Mosquitto in the foreground with the project's configuration (no 1000-message limit)."""
    import os

    from iot_etl.broker import BrokerConfigError, broker_argv
    from iot_etl.dagster_instance import dagster_home
    from iot_etl.state_dir import restrict_umask

    restrict_umask()
    settings = get_settings()
    try:
        argv = broker_argv(settings, dagster_home(settings).parent / "broker")
    except BrokerConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.security:
        where = (
            f"devices on {settings.mqtt_host}:{settings.mqtt_tls_port}, "
            f"services on {settings.mqtt_service_host}:{settings.mqtt_service_port} (mTLS)"
        )
    else:
        where = f"{settings.mqtt_host}:{settings.mqtt_port}"
    click.echo(f"mosquitto: {where}, with {argv[-1]}")
    os.execv(argv[0], argv)


@main.command("broker-config")
@click.option(
    "--port",
    type=int,
    default=None,
    help="Listener port (default: IOT_MQTT_PORT; with --tls IOT_MQTT_TLS_PORT).",
)
@click.option(
    "--all-interfaces",
    is_flag=True,
    help="Listen on 0.0.0.0 (e.g. inside a container) instead of IOT_MQTT_HOST (with --tls: the device "
    "listener).",
)
@click.option(
    "--persistence-dir", type=click.Path(), default=None, help="Where the broker persists sessions."
)
@click.option(
    "--tls",
    is_flag=True,
    help="The broker of devices with certificates (IOT_PKI_DIR): a device listener and a service listener, "
    "mTLS, per-device ACLs, no anonymous client; needs --out.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="With --tls: write DIR/mosquitto.conf, its ACL files and copies of the certificates, key and CRL "
    "it reads (for `mosquitto -c DIR/mosquitto.conf`, as root or as the mosquitto user).",
)
def broker_config(
    port: int | None, all_interfaces: bool, persistence_dir: str | None, tls: bool, out: str | None
) -> None:
    """Print the project's Mosquitto configuration (no 1000-message queue limit), or with --tls write the
    secure one.

    Without --tls the broker allows anonymous clients (its first line says so), so it listens only on
    IOT_MQTT_HOST (127.0.0.1 by default) unless --all-interfaces is given."""
    from pathlib import Path

    from iot_etl.broker import BrokerConfigError, check_broker_pki, write_secure_broker_config
    from iot_etl.broker_config import TRUSTED_NETWORK_ONLY, render_broker_config
    from iot_etl.broker_values import ConfigValueError
    from iot_etl.state_dir import restrict_umask

    restrict_umask()
    settings = get_settings()
    if not tls:
        if out is not None:
            raise click.UsageError("--out writes the TLS broker's files: add --tls, or omit --out to print")
        try:
            text = render_broker_config(
                port=port or settings.mqtt_port,
                bind="0.0.0.0" if all_interfaces else settings.mqtt_host,
                persistence_dir=Path(persistence_dir) if persistence_dir else None,
                max_queued_bytes=settings.broker_max_queued_bytes,
            )
        except ConfigValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"{TRUSTED_NETWORK_ONLY}\n{text}")
        return
    if port is not None:
        settings = settings.model_copy(update={"mqtt_tls_port": port})
    try:
        if out is None:
            check_broker_pki(settings)  # a missing CA is what the user hears about first
            raise click.UsageError("--tls writes files: add --out DIR")
        conf = write_secure_broker_config(
            settings,
            Path(out),
            all_interfaces=all_interfaces,
            persistence_dir=Path(persistence_dir) if persistence_dir else None,
        )
    except BrokerConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {conf} and its ACL files; run `mosquitto -c {conf}`")


@main.command("redis-acl")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the file (mode 0600).")
def redis_acl_command(out: str | None) -> None:
    """Print the Redis ACL file of the listener's and the pipeline's users (from IOT_LISTENER_REDIS_URL
    and IOT_REDIS_URL), for a Redis of your own (`aclfile` in redis.conf) or compose. The default user is
    off; passwords are stored as SHA-256 hashes."""
    import os
    from pathlib import Path

    from iot_core.redis_acl import RedisAclError, acl_users, write_acl_file

    try:
        acl = acl_users(get_settings())
    except RedisAclError as exc:
        raise CommandFailed(exc.what, exc.todo, exit_code=2) from None
    for note in acl.notes:
        click.echo(f"note: {note}", err=True)
    if out is None:
        click.echo(acl.text, nl=False)
        return
    previous = os.umask(0o077)
    try:
        path = write_acl_file(Path(out), acl.text)
    finally:
        os.umask(previous)
    users = ", ".join(u.name for u in acl.users)
    click.echo(f"wrote {path} (users {users}; default user off): load it with `aclfile {path}` in redis.conf")


if __name__ == "__main__":
    main()
