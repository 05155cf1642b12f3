# One image for the listener, the Dagster webserver/daemon/run workers and the simulator; with Dagster's
# Kubernetes, Docker and Celery run launchers (the `deploy` extra) for runs on other machines.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md workspace.yaml ./
COPY iot_core ./iot_core
COPY iot_etl ./iot_etl
COPY ingest_listener ./ingest_listener
COPY dagster_project ./dagster_project
COPY simulator ./simulator
COPY sql ./sql
# `mosquitto` (uid and gid 1883, as in the eclipse-mosquitto image, whose broker drops to it): compose's `certs`
# service runs `iot-etl broker-config --tls` as root, which then writes the broker's files root:mosquitto 0640.
RUN pip install --no-cache-dir -e ".[deploy]" && useradd --create-home --uid 10001 iot && mkdir -p /dagster_home \
    && chown iot /dagster_home \
    && groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --no-create-home --shell /usr/sbin/nologin mosquitto
USER iot
ENV DAGSTER_HOME=/dagster_home IOT_DAGSTER_HOME=/dagster_home
