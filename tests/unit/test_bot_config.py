"""The bot's own settings: webhook mode is refused without a secret, bad values are named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.bot.runner import BotConfig
from actors.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "PARALLEL_AGENTS_TELEGRAM_"


def test_webhook_mode_without_a_secret_is_refused():
    with pytest.raises(ConfigurationError, match=f"{PREFIX}WEBHOOK_SECRET"):
        BotConfig(webhook_url="https://bot.example/telegram")
    with pytest.raises(ConfigurationError, match=f"{PREFIX}WEBHOOK_SECRET"):
        BotConfig.from_env({f"{PREFIX}WEBHOOK_URL": "https://bot.example/telegram"})


def test_webhook_mode_with_a_secret_keeps_it():
    config = BotConfig.from_env(
        {
            f"{PREFIX}WEBHOOK_URL": "https://bot.example/telegram",
            f"{PREFIX}WEBHOOK_SECRET": "s3-x_Y",
        }
    )
    assert (config.webhook_url, config.webhook_secret) == ("https://bot.example/telegram", "s3-x_Y")


def test_polling_needs_no_secret():
    assert BotConfig.from_env({}).webhook_url is None


@pytest.mark.parametrize("secret", ["has space", "x" * 257, "ünï"])
def test_a_secret_telegram_would_reject_is_refused(secret):
    with pytest.raises(ConfigurationError, match="A-Z, a-z, 0-9"):
        BotConfig(webhook_url="https://bot.example/telegram", webhook_secret=secret)


@pytest.mark.parametrize(
    ("name", "value"),
    [("CALL_TIMEOUT_S", "soon"), ("CONCURRENT_UPDATES", "0"), ("WEBHOOK_PORT", "-1")],
)
def test_an_unusable_number_names_the_variable_and_value(name, value):
    with pytest.raises(ConfigurationError, match=f"{PREFIX}{name}='{value}'"):
        BotConfig.from_env({f"{PREFIX}{name}": value})


def test_timeouts_and_concurrency_come_from_the_environment():
    config = BotConfig.from_env(
        {
            f"{PREFIX}CALL_TIMEOUT_S": "7.5",
            f"{PREFIX}REQUEST_TIMEOUT_S": "3",
            f"{PREFIX}CONCURRENT_UPDATES": "4",
        }
    )
    assert (config.call_timeout_s, config.telegram_timeout_s, config.concurrent_updates) == (
        7.5,
        3.0,
        4,
    )


def test_bot_started_in_webhook_mode_without_a_secret_exits_2(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(PREFIX) and key != "RAY_ADDRESS"
    }
    env.update(
        TELEGRAM_BOT_TOKEN="123456:TEST-secret-token-do-not-log",
        PARALLEL_AGENTS_HOME=str(tmp_path),
        RAY_ADDRESS="127.0.0.1:1",  # were Ray reached, this would fail differently
        **{f"{PREFIX}WEBHOOK_URL": "https://bot.example/telegram"},
    )
    done = subprocess.run(
        [sys.executable, "bot.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert f"{PREFIX}WEBHOOK_SECRET" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_quick_take_is_on_by_default_and_can_be_turned_off():
    assert BotConfig.from_env({}).quick_answer
    assert not BotConfig.from_env({f"{PREFIX}QUICK_ANSWER": "false"}).quick_answer
    with pytest.raises(ConfigurationError, match=f"{PREFIX}QUICK_ANSWER='maybe'"):
        BotConfig.from_env({f"{PREFIX}QUICK_ANSWER": "maybe"})
