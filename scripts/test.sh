#!/usr/bin/env bash
# Quick start, part 2: set up, then run the whole test suite (pytest) on the local services.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --require-services
# the UI test drives headless Chromium through chromedriver (Debian's packages); without them it is skipped
if ! { command -v chromium && command -v chromedriver; } >/dev/null && command -v apt-get >/dev/null \
  && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
    >/dev/null 2>&1 || echo "could not install chromium: the UI page test will be skipped" >&2
fi
# the dashboards' listener panels are checked against a real Prometheus (Debian's package); without it
# those tests are skipped
if ! command -v prometheus >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } >/dev/null 2>&1 \
    || echo "could not install prometheus: the Prometheus dashboard tests will be skipped" >&2
fi
cd "$ROOT"
# Given test paths or -k/-m, pytest runs just those. Otherwise two lanes: the fast one first (tests that
# start no process and need no service, in seconds), then the rest; a failing fast lane stops there.
for arg in "$@"; do
  case "$arg" in
    -k|-m|-k*|-m*|tests/*|*.py|*::*) exec .venv/bin/python -m pytest "$@" ;;
  esac
done
echo "fast lane: tests that need no service and start no process"
.venv/bin/python -m pytest -m "not services and not slow" "$@"
echo "services lane: tests against PostgreSQL, Redis, Mosquitto and whole processes"
exec .venv/bin/python -m pytest -m "services or slow" "$@"
