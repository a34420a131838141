"""Settings as a user gives them: partial overrides, one clear line for a bad value, exit
code 2 from every entry point, no secrets handed to actors, private state files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import (
    Settings,
    load_settings,
)
from actors.engine.store import Store
from actors.errors import ConfigurationError
from actors.models import Complexity, Role
from actors.observe.tracing import JsonLinesExporter
from actors.private_files import private_folder

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- partial nested overrides ----------------------------------------------------------


def test_the_readme_example_keeps_the_other_bound_of_the_pool(monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_POOLS__RESEARCH__MIN", "2")
    pools = Settings().pools
    assert (pools[Role.RESEARCH].min, pools[Role.RESEARCH].max) == (2, 12)
    assert (pools[Role.ANALYSIS].min, pools[Role.ANALYSIS].max) == (10, 15)  # untouched


def test_partial_levels_limiter_and_simulator_keep_their_defaults(monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_LEVELS__SIMPLE__TIME_LIMIT_S", "7")
    monkeypatch.setenv("PARALLEL_AGENTS_LIMITER__MAX_CONCURRENCY", "3")
    monkeypatch.setenv("PARALLEL_AGENTS_SIMULATOR__SEED", "9")
    settings = Settings()
    simple = settings.levels[Complexity.SIMPLE]
    assert (simple.time_limit_s, simple.max_microtasks, simple.max_agents) == (7, 5, 2)
    assert settings.limiter.max_concurrency == 3 and settings.limiter.max_attempts == 6
    assert settings.simulator.seed == 9 and settings.simulator.latency == "realistic"


def test_a_partial_pool_in_the_toml_file_keeps_its_default_max(monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[pools.validation]\nmax = 9\n")
    monkeypatch.setenv("PARALLEL_AGENTS_CONFIG", str(config))
    validation = Settings().pools[Role.VALIDATION]
    assert (validation.min, validation.max) == (4, 9)


def test_with_overrides_takes_a_partial_pool_too():
    settings = Settings().with_overrides(pools={"generation": {"max": 20}})
    assert (settings.pools[Role.GENERATION].min, settings.pools[Role.GENERATION].max) == (8, 20)


# --- one line naming the variable, the value and what is allowed ------------------------


def test_a_bad_integer_names_the_variable_the_value_and_the_type(monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_POOLS__RESEARCH__MIN", "abc")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "PARALLEL_AGENTS_POOLS__RESEARCH__MIN" in message
    assert "'abc'" in message and "integer" in message
    assert "max" not in message  # the other bound has its default: nothing to complain of


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PARALLEL_AGENTS_POOLS__RESEARCH__MIN", "20", "above max (12)"),
        ("PARALLEL_AGENTS_POOLS__RESERCH__MIN", "2", "'research', 'analysis'"),
        ("PARALLEL_AGENTS_LIMITER__MAX_CONCURRENCY", "0", "greater than or equal to 1"),
        ("PARALLEL_AGENTS_TRACE_EXPORTER", "zipkin", "pattern"),
        ("TELEGRAM_ALLOWED_USER_IDS", "42,bob", "Telegram user ids (integers)"),
        ("PARALLEL_AGENTS_POOLS", "{not json", "expected JSON"),
    ],
)
def test_every_bad_value_is_one_line_saying_what_is_allowed(monkeypatch, name, value, allowed):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert name in message and repr(value) in message and allowed in message


def test_a_bad_value_in_the_toml_file_names_the_key_and_the_file(monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[pools.research]\nmin = "many"\n')
    monkeypatch.setenv("PARALLEL_AGENTS_CONFIG", str(config))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "pools.research.min = 'many'" in message and str(config) in message
    assert "integer" in message


@pytest.mark.parametrize("content", [None, "[pools.research\n"])
def test_a_missing_or_broken_toml_file_is_named(monkeypatch, tmp_path, content):
    config = tmp_path / "config.toml"
    if content is not None:
        config.write_text(content)
    monkeypatch.setenv("PARALLEL_AGENTS_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="PARALLEL_AGENTS_CONFIG"):
        load_settings()


def test_a_secret_is_never_shown_in_the_message(monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_API_TOKEN", "s3cret")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(api_token=["not", "a", "string"])  # explicit arguments come first
    assert "s3cret" not in str(caught.value) and "<hidden>" in str(caught.value)


def _entry_point(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    values = {**os.environ, "PARALLEL_AGENTS_HOME": str(tmp_path / "home"), **env}
    values.pop("RAY_ADDRESS", None)
    # Were Ray reached, the output would say so: nothing may start before the settings hold.
    values["RAY_ADDRESS"] = "127.0.0.1:1"
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=values, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args",
    [["-m", "actors", "run", "x"], ["-m", "actors", "start"], ["-m", "actors", "stop"]],
    ids=["run", "start", "stop"],
)
def test_the_cli_prints_one_line_and_exits_2(tmp_path, args):
    done = _entry_point(args, tmp_path, PARALLEL_AGENTS_POOLS__RESEARCH__MIN="abc")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "PARALLEL_AGENTS_POOLS__RESEARCH__MIN='abc'" in lines[0] and "integer" in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "home").exists()  # nothing was started, nothing written


def test_the_bot_prints_one_line_and_exits_2(tmp_path):
    done = _entry_point(
        ["-m", "bot"], tmp_path, TELEGRAM_BOT_TOKEN="1:x", PARALLEL_AGENTS_HTTP_PORT="ninety"
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PARALLEL_AGENTS_HTTP_PORT='ninety'" in lines[0]


# --- secrets stay where they are needed --------------------------------------------------


def test_actors_get_neither_the_bot_token_nor_the_api_token():
    settings = Settings().with_overrides(
        anthropic_api_key="sk-ant-test", telegram_bot_token="1:bot", api_token="http-secret"
    )
    for_actors = settings.for_actors()
    assert for_actors.telegram_bot_token is None and for_actors.api_token is None
    assert for_actors.anthropic_api_key is not None  # agents call the model with it
    assert for_actors.anthropic_api_key.get_secret_value() == "sk-ant-test"
    assert "1:bot" not in repr(for_actors.model_dump()) and "http-secret" not in repr(
        for_actors.model_dump()
    )
    gateway = settings.for_actors(api_token=True)  # the HTTP gateway checks the token
    assert gateway.api_token is not None and gateway.telegram_bot_token is None
    assert settings.telegram_bot_token is not None  # the original is untouched


# --- state files are this user's only ----------------------------------------------------


def test_the_store_file_and_a_new_home_are_private(tmp_path):
    home = tmp_path / "home"
    store = Store(home / "store.sqlite3")
    store.close()
    assert _mode(home / "store.sqlite3") == 0o600
    assert _mode(home) == 0o700
    for companion in home.glob("store.sqlite3-*"):  # SQLite's -wal/-shm take the file's mode
        assert _mode(companion) == 0o600


def test_an_existing_store_file_is_narrowed(tmp_path):
    path = tmp_path / "store.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    Store(path).close()
    assert _mode(path) == 0o600


def test_the_trace_file_is_private_even_when_it_existed(tmp_path):
    fresh = tmp_path / "traces" / "fresh.jsonl"
    JsonLinesExporter(fresh).shutdown()
    assert _mode(fresh) == 0o600 and _mode(fresh.parent) == 0o700
    old = tmp_path / "old.jsonl"
    old.write_text("")
    old.chmod(0o644)
    JsonLinesExporter(old).shutdown()
    assert _mode(old) == 0o600


def test_the_home_folder_is_narrowed_to_its_owner(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    private_folder(home)
    assert _mode(home) == 0o700


def test_the_simulator_mode_says_who_answers_and_a_missing_piece_is_named():
    assert Settings().simulation == "embedded"  # no key: the embedded simulator
    assert Settings(anthropic_api_key="sk-ant-x").simulation == "off"
    keyed = Settings(anthropic_api_key="sk-ant-x", simulator={"mode": "embedded"})
    assert keyed.simulation == "embedded" and keyed.simulated
    bench = Settings(simulator={"mode": "external"}, anthropic_base_url="http://127.0.0.1:9")
    assert bench.simulation == "external" and bench.simulated
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        Settings(simulator={"mode": "off"})
    with pytest.raises(ValueError, match="ANTHROPIC_BASE_URL"):
        Settings(simulator={"mode": "external"})
