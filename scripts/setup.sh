#!/usr/bin/env bash
# Creates .venv with the project installed (editable, with test tools) and starts the local services
# (PostgreSQL, Redis, Mosquitto) where this machine has them installed but stopped.
# With --require-services (the test suite) it fails unless all three answer; otherwise a service that does
# not answer is only reported: `iot-etl up` starts its own (see docs/operating.md, "Embedded services").
# Sourced or run; idempotent and quick when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQUIRE_SERVICES=0
[ "${1:-}" = "--require-services" ] && REQUIRE_SERVICES=1
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Python 3.11+ is needed (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev,deploy]"
  rm -f .venv/.installed-* && touch "$stamp"
fi

wait_for() {  # name, check command, installed here (0/1)
  local tries=30
  [ "$REQUIRE_SERVICES" = 1 ] || [ "$3" = 1 ] || tries=1
  for _ in $(seq 1 "$tries"); do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  if [ "$REQUIRE_SERVICES" = 1 ]; then
    echo "$1 is not reachable; start it (see docs/development.md)" >&2; return 1
  fi
  echo "$1 does not answer on its default address: iot-etl up starts its own (docs/operating.md, 'Embedded services')"
}
installed() { command -v "$1" >/dev/null 2>&1 && echo 1 || echo 0; }
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && command -v mosquitto >/dev/null; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
fi
wait_for PostgreSQL "(exec 3<>/dev/tcp/127.0.0.1/5432)" "$(installed pg_ctlcluster)"
wait_for Redis "(exec 3<>/dev/tcp/127.0.0.1/6379)" "$(installed redis-server)"
wait_for Mosquitto "(exec 3<>/dev/tcp/127.0.0.1/1883)" "$(installed mosquitto)"
