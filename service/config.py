"""The service's configuration, read from the environment in one place.

Each variable is declared once, in SETTINGS: its name (and former names), the `Config` field it sets, how it
is read, its lowest value and its meaning. A field's default is the dataclass's own (the engine's settings
carry theirs). `Config.from_env` and the README's table (`python -m service config --markdown`) are made
from SETTINGS, and a value that cannot work is a ConfigError of one line naming the variable."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from outbox.migrations import MigrationSettings
from outbox.relay import RelaySettings
from outbox.retention import PurgeSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent

IPNetwork = IPv4Network | IPv6Network


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number (int), got {raw.strip()!r}") from exc


def _float(name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number (float), got {raw.strip()!r}") from exc


def _bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {word!r}")


def _text(name: str, raw: str) -> str:
    return raw


def _level(name: str, raw: str) -> str:
    return raw.upper()


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _secret(name: str, raw: str) -> str | None:
    """A token as set; refused when it differs from itself stripped (a secret mounted from a file keeps its
    newline): the token a client presents is stripped, so it could never match."""
    if not raw:
        return None
    if raw != raw.strip():
        raise ConfigError(
            f"{name} has leading or trailing whitespace (a newline from a secret file?): it could never"
            " match a presented token; set it without"
        )
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# The ECO backend's default origins: the production app, its Vercel previews, its dev and preview servers.
DEFAULT_CORS_ORIGINS = (
    "https://ecofrontend888.vercel.app",
    r"^https://[a-z0-9-]+\.vercel\.app$",
    "http://localhost:5173",
    "http://localhost:5174",
    "http://localhost:4173",
    "http://localhost:4174",
)
# `*` in an origin stands for one or more host labels (`https://*.vercel.app`), never a `/`, `:` or `@`.
_HOST_LABELS = "[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*"


def origin_pattern(entry: str) -> re.Pattern[str] | None:
    """What an allowed-origin entry matches when it is not one exact origin: `^…$` is a regular expression,
    matched against the whole origin, and an entry with `*` a pattern. None for an exact origin."""
    if entry.startswith("^") or entry.endswith("$"):
        return re.compile(entry)
    if "*" in entry:
        return re.compile(_HOST_LABELS.join(re.escape(part) for part in entry.split("*")))
    return None


def _origins(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of allowed origins. Every answer to them allows credentials, so `*` (any
    origin, with credentials) is refused, as is a regular expression that does not compile."""
    entries = tuple(dict.fromkeys(_list(raw)))
    for entry in entries:
        if entry == "*":
            raise ConfigError(
                f"{name} must name the origins allowed to call with credentials: `*` (any origin) is refused"
            )
        try:
            origin_pattern(entry)
        except re.error as exc:
            raise ConfigError(f"{name}: {entry!r} is not a valid regular expression: {exc}") from exc
    return entries


# The module keys the ECO app accepts; it drops any other without a word.
MODULE_KEY_PATTERN = r"^[A-Za-z0-9_.:\-]+$"


def _module_keys(name: str, raw: str) -> tuple[str, ...]:
    keys = _list(raw)
    for key in keys:
        if re.match(MODULE_KEY_PATTERN, key) is None:
            raise ConfigError(f"{name} lists module keys of letters, digits and _ . : -, got {key!r}")
    return keys


def _networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ip_network(item, strict=False) for item in _list(raw))
    except ValueError as exc:
        raise ConfigError(
            f"{name} must list IP addresses or networks (CIDR), comma-separated: {exc}"
        ) from exc


@dataclass(frozen=True)
class ValueType:
    """How a variable's text is read: `name` is its type in the README's table."""

    name: str
    parse: Callable[[str, str], Any]
    # The lowest value a number may take when its setting names no other bound.
    minimum: float | None = None


INT = ValueType("integer", _int, minimum=0)
FLOAT = ValueType("number", _float, minimum=0.0)
BOOL = ValueType("boolean", _bool)
TEXT = ValueType("text", _text)
LEVEL = ValueType("log level", _level)
PATH = ValueType("path", _path)
SECRET = ValueType("secret", _secret)
ORIGINS = ValueType("origins", _origins)
MODULE_KEYS = ValueType("module keys", _module_keys)
NETWORKS = ValueType("networks", _networks)


@dataclass(frozen=True)
class Limits:
    """Bounds on client input; every one is a 413 or 422, never a 500."""

    signal_body_bytes: int = 32 * 1024
    ask_body_bytes: int = 1024 * 1024
    signal_batch_items: int = 100
    signal_name_chars: int = 64
    signal_meta_bytes: int = 8 * 1024
    signal_meta_depth: int = 8
    ask_message_chars: int = 16_000


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 3001
    # HTTP processes sharing the port (SO_REUSEPORT), each with the whole app.
    processes: int = 1
    # `serve` runs the relay in a process of its own beside the HTTP process(es), which then run none.
    relay_process: bool = True
    # Set by the ECO_PROCESSES supervisor for its workers (never from the environment): the folder where
    # prometheus-client's multiprocess mode keeps every worker's values, so that /metrics sums them.
    metrics_dir: Path | None = None
    # Set by the supervisor for its processes when the relay runs in one of its own (never from the
    # environment): the file where the relay process reports its health, which /readyz reads.
    relay_report: Path | None = None
    # Set by the supervisor for its processes (never from the environment): the optional migrations its
    # migration could not add, and why, which /readyz reports.
    not_added: tuple[tuple[str, str], ...] = ()
    # False in the ECO_PROCESSES supervisor's workers (never from the environment): the supervisor applied
    # the migrations once before starting them, so that no worker is a migrator whose death stops them all.
    migrate_on_start: bool = True
    migrations: MigrationSettings = field(default_factory=MigrationSettings)
    # X-Forwarded-For names the client only when the connection comes from one of these networks.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    database_url: str | None = None
    target_database_url: str | None = None
    data_dir: Path = PROJECT_DIR / ".eco-data"
    db_pool_max: int = 10
    db_timeout_s: float = 10.0
    retry_after_s: int = 2
    intake_batch_max_rows: int = 500
    intake_batch_wait_ms: float = 0.0
    intake_flushers: int = 2
    # No request waits longer than this for its outbox commit: it gets a 503 with Retry-After instead.
    enqueue_timeout_s: float = 15.0
    # An interaction's completion and telemetry that met the outbox down mid-stream: held in memory up to
    # this many rows, retried every deferred_retry_s, flushed on shutdown.
    deferred_max_rows: int = 10_000
    deferred_retry_s: float = 1.0
    # Allocations between young-generation collections when serving (0: Python's default, 700).
    gc_gen0_threshold: int = 20_000
    relay: RelaySettings = field(default_factory=RelaySettings)
    purge: PurgeSettings = field(default_factory=PurgeSettings)
    sse_ping_s: float = 15.0
    offline_chunk_delay_ms: float = 10.0
    rate_limit_per_s: float = 50.0
    rate_limit_burst: float = 200.0
    sse_send_timeout_s: float = 30.0
    # A client slower than these is cut off: the request head must be complete this long after the
    # connection opened or its last answer ended (aiohttp's keep-alive timeout, kept above a proxy's idle
    # upstream keep-alive, 60 s in nginx); the body must arrive within body_timeout_s (408).
    header_timeout_s: float = 75.0
    body_timeout_s: float = 10.0
    admin_token: str | None = None
    # Origins allowed to call from a browser, with credentials: exact, `*` patterns, or `^…$` expressions.
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    log_json: bool = False
    log_level: str = "INFO"
    llm_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 60.0
    # The modules the OpenAI-compatible responder's replies are made with, named in `done` as `module_combo`
    # (the ECO app posts a module usage for each, and takes the last as the arm of its feedback). Empty: the
    # responder's own name.
    llm_modules: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    @property
    def relay_apart(self) -> bool:
        """The relay runs in a process of its own: asked for, and there is a relay to run."""
        return self.relay_process and self.relay.loops > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """The defaults, with each variable of SETTINGS that is set; ConfigError names the first refused."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        defaults = cls()
        for setting in SETTINGS:
            name = setting.variable_in(env)
            raw = env.get(name)
            if raw is None or (not raw.strip() and not setting.keep_blank):
                continue
            value = setting.read(name, raw)
            if setting.extends:
                value = tuple(
                    dict.fromkeys(values.get(setting.field, default_of(defaults, setting.field)) + value)
                )
            values[setting.field] = value
        return _replaced(defaults, values, "")


def default_of(config: Config, field_path: str) -> Any:
    """The value of a dotted field path (`relay.backoff.base_ms`) in `config`."""
    value: Any = config
    for part in field_path.split("."):
        value = getattr(value, part)
    return value


def _replaced(settings: Any, values: Mapping[str, Any], prefix: str) -> Any:
    """`settings` with the `values` of its (dotted) fields, nested settings rebuilt alike."""
    changes: dict[str, Any] = {}
    for item in fields(settings):
        current = getattr(settings, item.name)
        path = prefix + item.name
        if is_dataclass(current):
            changes[item.name] = _replaced(current, values, path + ".")
        elif path in values:
            changes[item.name] = values[path]
    return replace(settings, **changes)


@dataclass(frozen=True)
class Setting:
    """One environment variable: the `Config` field it sets (a dotted path), how it is read, its lowest
    value, and what it means (the README's configuration table is made from these)."""

    name: str
    field: str
    type: ValueType
    help: str
    minimum: float | None = None
    # Former names, still read when `name` is not set, so that operators' settings keep working.
    aliases: tuple[str, ...] = ()
    # A set but blank value is read (a list set empty is no entry), instead of leaving the default.
    keep_blank: bool = False
    # The value adds to the field's (after the variables above it), instead of replacing it.
    extends: bool = False
    # The README's default when the field's own value does not say it.
    shown_default: str | None = None

    @property
    def bound(self) -> float | None:
        return self.type.minimum if self.minimum is None else self.minimum

    def variable_in(self, env: Mapping[str, str]) -> str:
        """The variable that is set: `name`, or a former name. Errors then name the one the operator wrote."""
        for name in (self.name, *self.aliases):
            if env.get(name, "").strip():
                return name
        return self.name

    def read(self, name: str, raw: str) -> Any:
        value = self.type.parse(name, raw)
        if self.bound is not None and value < self.bound:
            raise ConfigError(f"{name} must be >= {self.bound}, got {value}")
        return value


# Every variable the service reads, once. Config fields missing here are never read from the environment.
SETTINGS: tuple[Setting, ...] = (
    Setting("ECO_HOST", "host", TEXT, "address to listen on", keep_blank=True),
    Setting("ECO_PORT", "port", INT, "port"),
    Setting(
        "ECO_RELAY_PROCESS",
        "relay_process",
        BOOL,
        "`1`: `serve` runs the relay in a process of its own beside the HTTP process(es), whose event loops"
        " then answer requests only; `0`: each HTTP process runs its own relay",
    ),
    Setting(
        "ECO_PROCESSES",
        "processes",
        INT,
        "HTTP processes sharing the port (SO_REUSEPORT), each with its own relay unless ECO_RELAY_PROCESS;"
        " `/metrics` sums them all",
        minimum=1,
        aliases=("ECO_WORKERS",),
    ),
    Setting(
        "ECO_GC_GEN0_THRESHOLD",
        "gc_gen0_threshold",
        INT,
        "young-generation GC threshold when serving (`0`: Python's default)",
    ),
    Setting(
        "DATABASE_URL",
        "database_url",
        TEXT,
        "outbox database; unset: an embedded PostgreSQL in `ECO_DATA_DIR`",
        shown_default="(embedded)",
    ),
    Setting(
        "TARGET_DATABASE_URL",
        "target_database_url",
        TEXT,
        "database with `analytics.eco_interactions` / `eco_passive_signals`",
        shown_default="`DATABASE_URL`",
    ),
    Setting(
        "ECO_DATA_DIR", "data_dir", PATH, "folder of the embedded PostgreSQL", shown_default="`./.eco-data`"
    ),
    Setting("ECO_DB_POOL_MAX", "db_pool_max", INT, "connections per pool", minimum=2),
    Setting("ECO_DB_TIMEOUT_S", "db_timeout_s", FLOAT, "connect and query timeout", minimum=0.1),
    Setting(
        "ECO_MIGRATION_TIMEOUT_S",
        "migrations.timeout_s",
        FLOAT,
        "the start-up migrator's own deadline, lock waits, retries and index builds included",
        minimum=1.0,
    ),
    Setting(
        "ECO_MIGRATION_LOCK_TIMEOUT_MS",
        "migrations.lock_timeout_ms",
        INT,
        "a migration statement gives up a lock wait after this (and is retried)",
        minimum=1,
    ),
    Setting(
        "ECO_MIGRATION_RETRY_PAUSE_S",
        "migrations.retry_pause_s",
        FLOAT,
        "pause before a migration file (or the migration lock) is tried again",
        minimum=0.01,
    ),
    Setting("ECO_RETRY_AFTER_S", "retry_after_s", INT, "`Retry-After` on 503", minimum=1),
    Setting(
        "ECO_INTAKE_BATCH_MAX_ROWS",
        "intake_batch_max_rows",
        INT,
        "most rows in one group-commit INSERT",
        minimum=1,
    ),
    Setting(
        "ECO_INTAKE_BATCH_WAIT_MS",
        "intake_batch_wait_ms",
        FLOAT,
        "extra wait to gather a batch (0: send as soon as a flusher is free)",
    ),
    Setting(
        "ECO_INTAKE_FLUSHERS",
        "intake_flushers",
        INT,
        "intake flushers: group-commit batches in flight at once, per process",
        minimum=1,
    ),
    Setting(
        "ECO_ENQUEUE_TIMEOUT_S",
        "enqueue_timeout_s",
        FLOAT,
        "longest wait in the intake queue, and the intake INSERT's `statement_timeout`; past it a 503 with"
        " Retry-After",
        minimum=0.1,
    ),
    Setting(
        "ECO_DEFERRED_MAX_ROWS",
        "deferred_max_rows",
        INT,
        "most rows held in memory when the outbox is lost mid-stream (oldest dropped beyond)",
        minimum=1,
    ),
    Setting(
        "ECO_DEFERRED_RETRY_S", "deferred_retry_s", FLOAT, "how often held rows are retried", minimum=0.01
    ),
    Setting("ECO_RELAY_BATCH", "relay.batch_size", INT, "rows claimed per relay batch", minimum=1),
    Setting(
        "ECO_RELAY_POLL_S",
        "relay.poll_s",
        FLOAT,
        "longest wait between claims when no NOTIFY comes",
        minimum=0.01,
    ),
    Setting(
        "ECO_RELAY_LOOPS",
        "relay.loops",
        INT,
        "relay loops in the relay process (in each HTTP process without ECO_RELAY_PROCESS); `0`: an"
        " intake-only node, ready, relying on a relay elsewhere",
        aliases=("ECO_RELAY_WORKERS",),
    ),
    Setting(
        "ECO_RELAY_COALESCE_MS",
        "relay.coalesce_ms",
        FLOAT,
        "after a partial batch, the next starts at least this long after the last batch any loop started",
    ),
    Setting(
        "ECO_RELAY_MAX_ATTEMPTS",
        "relay.max_attempts",
        INT,
        "attempts before a row is dead-lettered",
        minimum=1,
    ),
    Setting(
        "ECO_RELAY_MAX_AGE_S", "relay.max_age_s", FLOAT, "age after which a waiting row is dead-lettered"
    ),
    Setting(
        "ECO_RELAY_ORPHAN_MAX_ATTEMPTS",
        "relay.orphan_max_attempts",
        INT,
        "attempts before an orphan (a signal whose parent is in neither the outbox nor the target) is"
        " dead-lettered",
        minimum=1,
    ),
    Setting(
        "ECO_RELAY_CLAIM_TIMEOUT_S",
        "relay.claim_timeout_s",
        FLOAT,
        "a frozen relay's claim (and target transaction) ends after this long idle",
        minimum=0.1,
    ),
    Setting(
        "ECO_RELAY_UNHEALTHY_BATCHES",
        "relay.unhealthy_batches",
        INT,
        "a relay loop whose last this many batches failed makes `/readyz` 503",
        minimum=1,
    ),
    Setting(
        "ECO_RELAY_BACKOFF_BASE_MS",
        "relay.backoff.base_ms",
        FLOAT,
        "first retry delay (doubles each attempt, with jitter)",
        minimum=1,
    ),
    Setting("ECO_RELAY_BACKOFF_CAP_MS", "relay.backoff.cap_ms", FLOAT, "longest retry delay", minimum=1),
    Setting("ECO_OUTBOX_RETENTION_S", "purge.retention_s", FLOAT, "how long delivered rows are kept"),
    Setting(
        "ECO_OUTBOX_DEAD_RETENTION_S",
        "purge.dead_retention_s",
        FLOAT,
        "how long dead rows are kept (to read and requeue) before the purge removes them",
    ),
    Setting(
        "ECO_OUTBOX_PURGE_INTERVAL_S", "purge.interval_s", FLOAT, "how often the purger runs", minimum=0.01
    ),
    Setting("ECO_OUTBOX_PURGE_BATCH", "purge.batch", INT, "rows per purge statement", minimum=1),
    Setting("ECO_SSE_PING_S", "sse_ping_s", FLOAT, "keep-alive comment interval", minimum=0.01),
    Setting(
        "ECO_SSE_SEND_TIMEOUT_S",
        "sse_send_timeout_s",
        FLOAT,
        "a client that does not read for this long is cut off",
        minimum=0.1,
    ),
    Setting(
        "ECO_HEADER_TIMEOUT_S",
        "header_timeout_s",
        FLOAT,
        "a connection whose request head is not complete this long after it opened or after its last answer"
        " is closed (above nginx's 60 s idle upstream keep-alive)",
        minimum=0.1,
    ),
    Setting(
        "ECO_BODY_TIMEOUT_S",
        "body_timeout_s",
        FLOAT,
        "a request body must arrive within this; past it a 408 and the connection closes",
        minimum=0.1,
    ),
    Setting(
        "ECO_OFFLINE_CHUNK_DELAY_MS",
        "offline_chunk_delay_ms",
        FLOAT,
        "pause between chunks of the offline responder",
    ),
    Setting(
        "ECO_RATE_LIMIT_PER_S",
        "rate_limit_per_s",
        FLOAT,
        "signals (and other requests) per second per client address (intake and the status endpoint), per"
        " worker process: a batch of n signals counts n; `0` turns it off",
    ),
    Setting("ECO_RATE_LIMIT_BURST", "rate_limit_burst", FLOAT, "burst allowance per client", minimum=1),
    Setting(
        "ECO_ADMIN_TOKEN",
        "admin_token",
        SECRET,
        "bearer token of the admin endpoints; unset: admin off; refused at start when it has leading or"
        " trailing whitespace",
        keep_blank=True,
    ),
    Setting(
        "ECO_CORS_ORIGINS",
        "cors_origins",
        ORIGINS,
        "comma-separated origins allowed to call the API from a browser, with credentials: exact, a pattern"
        " with `*` (host labels), or a regular expression `^…$`; replaces the defaults; set empty for none;"
        " `*` alone is refused",
        keep_blank=True,
        shown_default="the ECO backend's: `https://ecofrontend888.vercel.app`, `^https://[a-z0-9-]+\\.vercel\\.app$`,"
        " `http://localhost:5173`, `:5174`, `:4173`, `:4174`",
    ),
    Setting(
        "CORS_ALLOWLIST",
        "cors_origins",
        ORIGINS,
        "the ECO backend's variable, same syntax: origins added to `ECO_CORS_ORIGINS` (or to the defaults)",
        extends=True,
        shown_default="(unset)",
    ),
    Setting(
        "ECO_TRUSTED_PROXIES",
        "trusted_proxies",
        NETWORKS,
        "comma-separated addresses or CIDR networks of reverse proxies; from them, the client is the"
        " right-most `X-Forwarded-For` address that is not a proxy",
    ),
    Setting("ECO_LOG_JSON", "log_json", BOOL, "`1`: one JSON object per log line"),
    Setting("ECO_LOG_LEVEL", "log_level", LEVEL, "log level"),
    Setting(
        "ECO_LLM_URL",
        "llm_url",
        TEXT,
        "OpenAI-compatible base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`"
        " (`/chat/completions` is appended unless present); unset: the offline responder",
    ),
    Setting("ECO_LLM_API_KEY", "llm_api_key", TEXT, "sent to it as `Authorization: Bearer …`"),
    Setting("ECO_LLM_MODEL", "llm_model", TEXT, "the `model` field of its requests"),
    Setting(
        "ECO_LLM_TIMEOUT_S",
        "llm_timeout_s",
        FLOAT,
        "connect timeout, and the longest wait for each next piece",
        minimum=0.1,
    ),
    Setting(
        "ECO_LLM_MODULES",
        "llm_modules",
        MODULE_KEYS,
        "comma-separated module keys its replies are made with, named in `done` as `module_combo` (the ECO"
        " app posts a module usage for each; letters, digits, `_ . : -`); the offline responder names"
        " `offline`",
        shown_default="(unset: `openai`)",
    ),
    Setting("ECO_SIGNAL_MAX_BODY_BYTES", "limits.signal_body_bytes", INT, "signal body limit", minimum=64),
    Setting("ECO_ASK_MAX_BODY_BYTES", "limits.ask_body_bytes", INT, "ask-eco body limit", minimum=64),
    Setting("ECO_SIGNAL_MAX_BATCH", "limits.signal_batch_items", INT, "signals per batch", minimum=1),
    Setting("ECO_SIGNAL_MAX_NAME_CHARS", "limits.signal_name_chars", INT, "signal name length", minimum=1),
    Setting("ECO_SIGNAL_MAX_META_BYTES", "limits.signal_meta_bytes", INT, "meta size as JSON", minimum=2),
    Setting("ECO_SIGNAL_MAX_META_DEPTH", "limits.signal_meta_depth", INT, "meta nesting depth", minimum=1),
    Setting("ECO_ASK_MAX_MESSAGE_CHARS", "limits.ask_message_chars", INT, "prompt length", minimum=1),
)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if value is None:
        return "(unset)"
    if value == ():
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def markdown_table() -> str:
    """The README's configuration table, made from SETTINGS (`python -m service config --markdown`)."""
    defaults = Config()
    lines = ["| variable | type | default | lowest | meaning |", "|---|---|---|---|---|"]
    for setting in SETTINGS:
        default = setting.shown_default or _shown(default_of(defaults, setting.field))
        lowest = "" if setting.bound is None else _shown(setting.bound)
        meaning = setting.help + "".join(
            f" (`{alias}`, its former name, still works)" for alias in setting.aliases
        )
        lines.append(f"| `{setting.name}` | {setting.type.name} | {default} | {lowest} | {meaning} |")
    return "\n".join(lines) + "\n"
