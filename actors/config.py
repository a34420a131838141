"""Settings, read once at the edge (CLI, serve_app.py, bot.py) and passed down.

Every field can come from the environment (prefix ``PARALLEL_AGENTS_``, nested
fields joined by ``__``, e.g. ``PARALLEL_AGENTS_POOLS__RESEARCH__MAX=4``), from
a TOML file named by ``PARALLEL_AGENTS_CONFIG``, or from explicit arguments.
The contract names from ARCHITECTURE.md (``ANTHROPIC_API_KEY``,
``TELEGRAM_BOT_TOKEN``, ...) are read under their own names. A partial nested
override (one bound of one pool) keeps the defaults of the rest. Entry points
call ``load_settings()``: an invalid setting is one line naming the variable,
the value and what is allowed (``ConfigurationError``), never a traceback.

Names of actors, the Ray namespace and default ports live here too, so there
is exactly one place to look them up. The groups ``Settings`` is made of (purposes,
pool and level bounds, the limiter's and the simulator's settings) are in
``actors.settings_groups`` and imported from here.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from actors.errors import ConfigurationError
from actors.models import Complexity, Role
from actors.settings_groups import (
    Effort,
    Level,
    LimiterSettings,
    PoolSize,
    Purpose,
    SimulatorSettings,
    Strategy,
    default_effort,
    default_levels,
    default_models,
    default_output_tokens,
    default_pools,
)

# The parts of Settings are imported from here, with it (``actors.settings_groups``).
__all__ = [
    "DEFAULT_HTTP_PORT", "ENV_PREFIX", "LIMITER_NAME", "MODEL_CLIENT_PREFIX", "NAMESPACE",
    "ORCHESTRATOR_NAME", "RAY_HEAD_PORT", "SIMULATOR_NAME", "Effort", "Level",
    "LimiterSettings", "PoolSize", "Purpose", "Settings", "SimulatorSettings", "Strategy",
    "agent_actor_name", "load_settings", "model_client_name", "pool_actor_name",
]  # fmt: skip

NAMESPACE = "parallel_agents"
ORCHESTRATOR_NAME = "orchestrator"
LIMITER_NAME = "rate-limiter"
SIMULATOR_NAME = "llm-simulator"
DEFAULT_HTTP_PORT = 9090
RAY_HEAD_PORT = 6379  # the head ``parallel-agents start`` brings up (Ray's own default)
ENV_PREFIX = "PARALLEL_AGENTS_"


def pool_actor_name(role: Role) -> str:
    """Name of the pool actor for ``role`` (e.g. ``pool-research``)."""
    return f"pool-{role.value}"


MODEL_CLIENT_PREFIX = "model-client-"


def model_client_name(node_id: str) -> str:
    """Name of the model-client actor of one node (``model-client-<node id>``)."""
    return f"{MODEL_CLIENT_PREFIX}{node_id}"


def agent_actor_name(role: Role, index: int) -> str:
    """Name of one agent actor (e.g. ``research-03``), as shown in the Ray dashboard."""
    return f"{role.value}-{index:02d}"


class Settings(BaseSettings):
    """Everything configurable, in one object."""

    model_config = SettingsConfigDict(
        env_prefix="PARALLEL_AGENTS_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "telegram_bot_token")
    )
    telegram_api_base_url: str = Field(
        default="https://api.telegram.org",
        validation_alias=AliasChoices("TELEGRAM_API_BASE_URL", "telegram_api_base_url"),
    )
    telegram_allowed_user_ids: str = Field(
        default="",
        validation_alias=AliasChoices("TELEGRAM_ALLOWED_USER_IDS", "telegram_allowed_user_ids"),
    )

    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    api_token: SecretStr | None = None
    # Requests the HTTP app serves at once. Each open event stream holds one for its whole
    # life (Serve's default of 5 let five streams block /health); 16 stay kept for the rest.
    http_max_ongoing_requests: int = Field(default=256, ge=32)
    # Extra names the Host header may carry (comma-separated) besides loopback and
    # http_host; "*" accepts any, and is refused without an API token.
    http_allowed_hosts: str = ""
    home: Path = Field(default_factory=lambda: Path.home() / ".parallel-agents")
    # Every model call written down where it is made (actors.llm.ledger), under
    # home / "ledger"; kept this many days (the daily budget needs one).
    call_ledger: bool = True
    call_ledger_days: float = Field(default=7.0, gt=0)

    models: dict[Purpose, str] = Field(default_factory=default_models)
    pools: dict[Role, PoolSize] = Field(default_factory=default_pools)
    levels: dict[Complexity, Level] = Field(default_factory=default_levels)
    limiter: LimiterSettings = Field(default_factory=LimiterSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)

    strategy: Strategy = Strategy.LEAST_LOADED
    agent_concurrency: int = Field(default=1, ge=1)
    spread_agents: bool = True
    # A custom resource only the head node has (cluster.yaml declares it): when set, the
    # orchestrator, limiter, simulator and pools (which own their agents: a pool lost with a
    # worker node would take its agents along) are pinned there; agents go anywhere.
    head_resource: str | None = None
    # Loopback by default; a multi-machine cluster without an API key needs an
    # address the worker nodes can reach (cluster.yaml sets 0.0.0.0).
    simulator_host: str = "127.0.0.1"
    # Output budget (max_tokens: thinking + answer) and thinking effort per purpose.
    output_tokens: dict[Purpose, int] = Field(default_factory=default_output_tokens)
    effort: dict[Purpose, Effort] = Field(default_factory=default_effort)
    plan_tokens_per_microtask: int = Field(default=150, ge=1)
    # Cache breakpoints on prompt prefixes other calls send too, where long enough for the
    # model (actors.llm.prompt_parts); False: none, every call pays full input.
    prompt_caching: bool = True
    # Before several microtasks of one role go out together, their shared prefix is
    # written to the cache first (a max_tokens 0 call), so they read it instead of all
    # writing it; costs one first-token wait per role and task (actors.engine.dispatch).
    warm_cache: bool = True
    # The planning call streams and each microtask is dispatched as soon as it is complete
    # and its dependencies are done (False: the whole plan first, then dispatch).
    stream_plan: bool = True
    # "hierarchical": complex and massive requests are planned in two levels, an outline
    # of branches and then each branch's microtasks in parallel (actors.engine.hierarchical).
    plan_mode: str = Field(default="flat", pattern="^(flat|hierarchical)$")
    # The synthesis streams to every front door as it is written (ANSWER progress events).
    stream_answer: bool = True
    # "sections": the plan ends with generation microtasks that each write one section of
    # the answer (about answer_words in all); each reaches followers as soon as it and
    # those before it are done, and a short overview closes it (actors.engine.sections).
    # "writer": one synthesis call writes the whole answer after the dispatch.
    answer_mode: str = Field(default="writer", pattern="^(writer|sections)$")
    answer_words: int = Field(default=1800, ge=100)
    # A request that goes to the DAG first gets a short direct answer, streamed as QUICK
    # events while the microtasks run; the full answer says what it adds or corrects.
    # The bot asks for it unless PARALLEL_AGENTS_TELEGRAM_QUICK_ANSWER is false (BotConfig);
    # HTTP and CLI callers per task.
    quick_answer: bool = False
    # Paid calls (answers received) one microtask may cost in all: attempts, schema
    # corrections, retries of cut answers and backups counted together.
    max_paid_calls_per_microtask: int = Field(default=4, ge=1)
    # Claims per reconciling call of the semantic merge (batches run side by side).
    reconcile_batch_claims: int = Field(default=60, ge=2)
    llm_timeout_s: float = Field(default=60.0, gt=0)
    max_request_chars: int = Field(default=20_000, ge=1)
    # A follow-up's prompts carry its conversation's earlier turns up to this many tokens;
    # past it the oldest are summarised once by a cheap call (actors.conversation).
    conversation_max_tokens: int = Field(default=6_000, ge=200)
    # Conversations unused for this long are deleted from the store (at start and hourly).
    conversation_retention_days: float = Field(default=30.0, gt=0)
    # Documents sent with a request (``actors.engine.documents``): per file, raw bytes (checked
    # before parsing) and extracted characters; per request, how many and their characters in all.
    max_document_bytes: int = Field(default=10_000_000, ge=1)
    max_document_chars: int = Field(default=100_000, ge=1)
    max_documents: int = Field(default=5, ge=1)
    max_documents_chars: int = Field(default=150_000, ge=1)
    # Admission limits: past them a request is refused clearly (HTTP 429), never queued blindly.
    max_running_tasks: int = Field(default=50, ge=1)
    max_tasks_per_user: int = Field(default=5, ge=1)
    task_budget_usd: float = Field(default=5.0, gt=0)
    daily_budget_usd: float = Field(default=100.0, gt=0)

    microtask_timeout_s: float = Field(default=60.0, gt=0)
    # Every phase of a task has a deadline, so a task ends within planning + its level's
    # time_limit_s (dispatch) + synthesis. Planning (verdict, plan, perhaps one more call
    # for a cut plan) can take minutes on the strongest model; past the limit the domain
    # template is used. The synthesis budget covers reconciling claims (at most half of
    # it) and writing the answer; past it the answer is stitched from the parts.
    planning_timeout_s: float = Field(default=300.0, gt=0)
    synthesis_timeout_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=0.2, ge=0)
    backups: bool = True
    backup_min_samples: int = Field(default=5, ge=1)
    # Backup copies are paid calls: at most this share of a task's microtasks get one.
    backup_max_share: float = Field(default=0.25, ge=0, le=1)

    scale_interval_s: float = Field(default=0.25, gt=0)
    upscale_delay_s: float = Field(default=0.5, ge=0)
    downscale_delay_s: float = Field(default=10.0, ge=0)
    target_per_agent: float = Field(default=1.0, gt=0)
    health_interval_s: float = Field(default=2.0, gt=0)
    agent_start_concurrency: int = Field(default=4, ge=1)  # agents a pool starts at once

    # OpenTelemetry spans (actors.observe.tracing): none, console (stdout), otlp
    # (OTEL_EXPORTER_OTLP_* variables) or jsonl (one JSON line per span, to trace_file or
    # home / "traces.jsonl").
    trace_exporter: str = Field(default="none", pattern="^(none|console|otlp|jsonl)$")
    trace_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_partial(cls, data: Any) -> Any:
        # ``PARALLEL_AGENTS_POOLS__RESEARCH__MIN=2`` alone arrives as {"research": {"min":
        # "2"}}: complete each partly given pool (level) from that role's (level's) default,
        # before PoolSize (Level) asks for the missing bound.
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for field, defaults in (("pools", default_pools), ("levels", default_levels)):
            given = data.get(field)
            if isinstance(given, Mapping):
                data[field] = _completed(given, defaults())
        return data

    @field_validator("telegram_allowed_user_ids")
    @classmethod
    def _user_ids(cls, value: str) -> str:
        for part in (part.strip() for part in value.split(",")):
            if part and not part.isdigit():
                raise ValueError(f"expected comma-separated Telegram user ids (integers): {part!r}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        # Partial overrides (one pool, one model) keep the defaults for the rest.
        self.pools = {**default_pools(), **self.pools}
        self.levels = {**default_levels(), **self.levels}
        self.models = {**default_models(), **self.models}
        self.output_tokens = {**default_output_tokens(), **self.output_tokens}
        self.effort = {**default_effort(), **self.effort}
        if self.simulator.mode == "off" and self.anthropic_api_key is None:
            raise ValueError("simulator.mode 'off' calls the Claude API: set ANTHROPIC_API_KEY")
        if self.simulator.mode == "external" and not self.anthropic_base_url:
            raise ValueError(
                "simulator.mode 'external' needs ANTHROPIC_BASE_URL: where that simulator serves"
            )
        return self

    def max_tokens_for(self, purpose: Purpose, microtasks: int = 0) -> int:
        """``max_tokens`` of a call for ``purpose``; a plan of up to ``microtasks`` gets
        ``plan_tokens_per_microtask`` more for each on top of its thinking headroom."""
        budget = self.output_tokens[purpose]
        if purpose is Purpose.PLANNING:
            budget += self.plan_tokens_per_microtask * microtasks
        return budget

    @property
    def ledger_folder(self) -> Path | None:
        return self.home / "ledger" if self.call_ledger else None

    @property
    def simulation(self) -> str:
        """``simulator.mode`` resolved: "embedded", "external" or "off" (the API)."""
        if self.simulator.mode == "auto":
            return "off" if self.anthropic_api_key is not None else "embedded"
        return self.simulator.mode

    @property
    def simulated(self) -> bool:
        """True when a simulator answers every call (labelled so in every answer)."""
        return self.simulation != "off"

    @property
    def allowed_user_ids(self) -> frozenset[int]:
        ids = (part.strip() for part in self.telegram_allowed_user_ids.split(","))
        return frozenset(int(part) for part in ids if part)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("PARALLEL_AGENTS_CONFIG")
        if toml_path:
            if not Path(toml_path).is_file():  # the TOML source would silently read nothing
                raise ConfigurationError(f"PARALLEL_AGENTS_CONFIG={toml_path!r}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def for_actors(self, *, api_token: bool = False) -> Settings:
        """This copy without the secrets actors do not need: the Telegram bot token always,
        the API token unless ``api_token`` (the HTTP gateway checks it).

        Settings are pickled into every actor's process (and into Ray's record of how it
        was created). Agents need the Anthropic key; only the bot needs the bot token.
        """
        kept = self.api_token if api_token else None
        return self.model_copy(update={"telegram_bot_token": None, "api_token": kept})

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (used by tests and the CLI)."""
        data = self.model_dump()
        data.update(changes)
        return Settings.model_validate(data)


def _completed(given: Mapping[Any, Any], defaults: Mapping[Any, BaseModel]) -> dict[Any, Any]:
    """``given`` with every partial entry (a mapping) filled in from the default of its key."""
    by_name = {str(key): model for key, model in defaults.items()}  # keys are StrEnums
    done: dict[Any, Any] = {}
    for key, value in given.items():
        default = by_name.get(str(key.value if isinstance(key, Enum) else key))
        if default is not None and isinstance(value, Mapping):
            value = {**default.model_dump(), **value}
        done[key] = value
    return done


# Fields whose values never appear in an error message.
_SECRETS = frozenset({"anthropic_api_key", "telegram_bot_token", "api_token"})


def load_settings(**overrides: Any) -> Settings:
    """``Settings(**overrides)``, with environment and TOML file, as every entry point loads it.

    Anything invalid raises ``ConfigurationError`` with one line naming each bad variable
    (or TOML key), its value and what is allowed, e.g.
    ``PARALLEL_AGENTS_POOLS__RESEARCH__MIN='abc': Input should be a valid integer, ...``.
    """
    toml_path = os.environ.get("PARALLEL_AGENTS_CONFIG")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: list[str] = []
        seen: list[list[str]] = []
        for error in exc.errors(include_url=False):
            path = [str(part) for part in error["loc"] if part != "[key]"]
            if any(path[: len(done)] == done for done in seen):
                continue  # e.g. the bounds of a pool whose role name is already wrong
            seen.append(path)
            problems.append(_problem(path, error, os.environ, toml_path))
        raise ConfigurationError("invalid setting " + "; ".join(problems)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"PARALLEL_AGENTS_CONFIG={toml_path!r}: not TOML: {exc}") from None
    except SettingsError as exc:  # a whole pool (say) given as a value that is not JSON
        found = re.search(r'field "([^"]+)"', str(exc))
        name = _variable([found.group(1)]) if found else "a setting"
        value = {k.upper(): v for k, v in os.environ.items()}.get(name, "")
        raise ConfigurationError(f"invalid setting {name}={value!r}: expected JSON") from None


def _problem(
    path: list[str], error: Mapping[str, Any], environ: Mapping[str, str], toml_path: str | None
) -> str:
    """One failed check as ``WHERE=VALUE: what is allowed``, WHERE as the user wrote it."""
    secret = bool(path) and path[0].lower() in _SECRETS
    shown: Callable[[Any], str] = (lambda _: "<hidden>") if secret else repr
    name = _variable(path)
    given = {key.upper(): value for key, value in environ.items()}
    if name in given:
        where = f"{name}={shown(given[name])}"
    elif below := sorted(key for key in given if key.startswith(name + "__")):
        where = ", ".join(f"{key}={shown(given[key])}" for key in below)
    elif toml_path:
        where = f"{'.'.join(path)} = {shown(error.get('input'))} in {toml_path}"
    else:
        where = f"{'.'.join(path)}={shown(error.get('input'))}"
    return f"{where}: {error['msg']}"


def _variable(path: list[str]) -> str:
    """The environment variable that sets ``path`` (``pools.research.min`` ->
    ``PARALLEL_AGENTS_POOLS__RESEARCH__MIN``; contract names such as ``ANTHROPIC_API_KEY``
    are their own)."""
    if not path:
        return ENV_PREFIX.rstrip("_")
    info = Settings.model_fields.get(path[0])
    if info is None and path[0].isupper():  # reported under its alias already
        return "__".join(path).upper()
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return "__".join([alias.choices[0], *path[1:]]).upper()
    return ENV_PREFIX + "__".join(path).upper()
