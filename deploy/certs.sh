#!/bin/sh
# The `certs` (one-shot) and `crl` (long-running) services of compose.yaml, in the app image, as root: root
# hands each volume to the one user that reads it. Idempotent: what exists is kept, what is missing issued.
#   certs.sh setup   the CAs, the broker's and the services' certificates, the broker's directory, the
#                    Redis ACL file and each service's client bundle
#   certs.sh crl     every CRL_REFRESH_S: re-sign the revocation list (an expired one makes the broker refuse
#                    every client) and rewrite the broker's directory; the broker re-reads it on SIGHUP
set -eu
umask 077

# Who reads what (uids of the images compose.yaml runs):
APP_UID=10001       # the app image's user `iot` (Dockerfile): listener, Dagster, simulator
REDIS_UID=999       # redis image (Debian): `useradd -r -u 999 redis`; its entrypoint runs redis-server as it
# The eclipse-mosquitto image's `mosquitto` user is uid 1883 (`adduser -u 1883`); the broker, started as root,
# drops to it before it opens certificates, CRL and ACL files. The app image has a `mosquitto` user with the
# same uid, so `iot-etl broker-config` run as root writes them root:mosquitto 0640 in a 0750 directory itself.

# Where things go (the volumes' mount points in compose.yaml):
PKI=${IOT_PKI_DIR:?}                            # the CAs and all issued: only `certs` and `crl` mount it
BROKER=${BROKER_DIR:-/broker}                   # mosquitto.conf, ACL files, copies of CAs, server pair, CRL
BROKER_DATA=${BROKER_DATA_DIR:-/mosquitto/data} # the broker's persistence folder, as the broker sees it
REDIS_ACL=${REDIS_ACL_DIR:-/redis-acl}          # users.acl for redis-server --aclfile
CLIENTS=${CLIENTS_DIR:-/clients}                # a folder (volume) per service: ca-chain.pem, its certificate

issue() {
    [ -f "$PKI/ca/device-ca.pem" ] || iot-etl certs init
    # `mosquitto` is the broker's name on the compose network; localhost and 127.0.0.1 for the published port
    [ -f "$PKI/server.pem" ] || iot-etl certs server --san DNS:mosquitto --san DNS:localhost --san IP:127.0.0.1
    for role in listener publisher simulator ops; do
        [ -f "$PKI/services/$role.pem" ] || iot-etl certs service "$role"
    done
}

broker() {
    iot-etl broker-config --tls --all-interfaces --persistence-dir "$BROKER_DATA" --out "$BROKER"
    # the broker's health check (run as root in its container) connects with the ops certificate
    mkdir -p "$BROKER/healthcheck"
    cp "$PKI/services/ops.pem" "$PKI/services/ops.key" "$BROKER/healthcheck/"
    chown -R 0:0 "$BROKER/healthcheck"
    chmod 0700 "$BROKER/healthcheck"
}

bundle() {  # bundle NAME ROLE: what service NAME needs to connect as ROLE, in its own volume
    dir="$CLIENTS/$1"
    mkdir -p "$dir/services"
    cp "$PKI/ca-chain.pem" "$dir/"
    cp "$PKI/services/$2.pem" "$PKI/services/$2.key" "$dir/services/"
    chown -R "$APP_UID:$APP_UID" "$dir"
    chmod -R u=rwX,go= "$dir"
}

case "${1:-}" in
setup)
    issue
    iot-etl certs crl
    broker
    mkdir -p "$REDIS_ACL"
    iot-etl redis-acl --out "$REDIS_ACL/users.acl"
    chown -R "$REDIS_UID:$REDIS_UID" "$REDIS_ACL"
    chmod 0700 "$REDIS_ACL"
    bundle listener listener
    bundle dagster publisher
    bundle simulator simulator
    ;;
crl)
    trap 'exit 0' TERM INT  # sh as PID 1 would ignore SIGTERM
    while :; do
        iot-etl certs crl
        broker
        sleep "${CRL_REFRESH_S:-43200}" &
        wait $!
    done
    ;;
*)
    echo "usage: certs.sh setup|crl" >&2
    exit 2
    ;;
esac
