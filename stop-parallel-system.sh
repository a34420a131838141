#!/usr/bin/env bash
# Tear down exactly what start-parallel-system.sh started.
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/parallel-agents stop "$@"
