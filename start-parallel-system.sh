#!/usr/bin/env bash
# Bring up the whole system in the background: Ray head (+ dashboard), agent pools,
# orchestrator, HTTP app on 127.0.0.1:9090, and the Telegram bot when TELEGRAM_BOT_TOKEN is set.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/parallel-agents ] || make venv
exec .venv/bin/parallel-agents start "$@"
