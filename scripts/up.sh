#!/usr/bin/env bash
# Quick start, part 1: set up, then run the whole pipeline with simulated devices (Ctrl-C stops it all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/iot-etl up "$@"
