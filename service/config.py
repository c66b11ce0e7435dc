"""The service's configuration, read from the environment in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TypeVar

from outbox.backoff import Backoff
from outbox.relay import RelaySettings
from outbox.retention import PurgeSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent

N = TypeVar("N", int, float)
IPNetwork = IPv4Network | IPv6Network


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _number(env: Mapping[str, str], name: str, default: N, minimum: N, parse: Callable[[str], N]) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number ({parse.__name__}), got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _aliased(env: Mapping[str, str], name: str, alias: str) -> str:
    """The variable that is set: `name`, or its older `alias`, kept so that operators' settings still work.
    Errors then name the variable the operator wrote."""
    return alias if not env.get(name, "").strip() and env.get(alias, "").strip() else name


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A token as set; refused when it differs from itself stripped (a secret mounted from a file keeps its
    newline): the token a client presents is stripped, so it could never match."""
    raw = env.get(name, "")
    if not raw:
        return None
    if raw != raw.strip():
        raise ConfigError(
            f"{name} has leading or trailing whitespace (a newline from a secret file?): it could never"
            " match a presented token; set it without"
        )
    return raw


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


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


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of allowed origins. Every answer to them allows credentials, so `*` (any
    origin, with credentials) is refused, as is a regular expression that does not compile."""
    entries = _list(env, name)
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


def _module_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    keys = _list(env, name)
    for key in keys:
        if re.match(MODULE_KEY_PATTERN, key) is None:
            raise ConfigError(f"{name} lists module keys of letters, digits and _ . : -, got {key!r}")
    return keys


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ip_network(item, strict=False) for item in _list(env, name))
    except ValueError as exc:
        raise ConfigError(
            f"{name} must list IP addresses or networks (CIDR), comma-separated: {exc}"
        ) from exc


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
class MigrationSettings:
    """The start-up migrator's bounds (service.store.migrations)."""

    # Its own deadline, lock waits, retries and index builds included: not the pool's client timeout.
    timeout_s: float = 300.0
    # A migration statement gives up a lock wait after this: while DDL waits, the table's writers queue
    # behind it.
    lock_timeout_ms: int = 2000
    # The pause before trying a file again after a lock wait given up, or the lock again.
    retry_pause_s: float = 1.0


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 3001
    # Service processes sharing the port (SO_REUSEPORT), each with the whole app, relay included.
    processes: int = 1
    # Set by the ECO_PROCESSES supervisor for its workers (never from the environment): the folder where
    # prometheus-client's multiprocess mode keeps every worker's values, so that /metrics sums them.
    metrics_dir: Path | None = None
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        defaults = cls()
        relay_defaults = RelaySettings()
        purge_defaults = PurgeSettings()
        backoff_defaults = Backoff()
        limit_defaults = Limits()
        migration_defaults = MigrationSettings()
        return cls(
            host=env.get("ECO_HOST", defaults.host),
            port=_int(env, "ECO_PORT", defaults.port),
            processes=_int(env, _aliased(env, "ECO_PROCESSES", "ECO_WORKERS"), defaults.processes, minimum=1),
            database_url=env.get("DATABASE_URL") or None,
            target_database_url=env.get("TARGET_DATABASE_URL") or None,
            data_dir=Path(env.get("ECO_DATA_DIR") or defaults.data_dir).expanduser().resolve(),
            db_pool_max=_int(env, "ECO_DB_POOL_MAX", defaults.db_pool_max, minimum=2),
            db_timeout_s=_float(env, "ECO_DB_TIMEOUT_S", defaults.db_timeout_s, minimum=0.1),
            migrations=MigrationSettings(
                timeout_s=_float(env, "ECO_MIGRATION_TIMEOUT_S", migration_defaults.timeout_s, minimum=1.0),
                lock_timeout_ms=_int(
                    env, "ECO_MIGRATION_LOCK_TIMEOUT_MS", migration_defaults.lock_timeout_ms, minimum=1
                ),
                retry_pause_s=_float(
                    env, "ECO_MIGRATION_RETRY_PAUSE_S", migration_defaults.retry_pause_s, minimum=0.01
                ),
            ),
            retry_after_s=_int(env, "ECO_RETRY_AFTER_S", defaults.retry_after_s, minimum=1),
            intake_batch_max_rows=_int(
                env, "ECO_INTAKE_BATCH_MAX_ROWS", defaults.intake_batch_max_rows, minimum=1
            ),
            intake_batch_wait_ms=_float(env, "ECO_INTAKE_BATCH_WAIT_MS", defaults.intake_batch_wait_ms),
            intake_flushers=_int(env, "ECO_INTAKE_FLUSHERS", defaults.intake_flushers, minimum=1),
            enqueue_timeout_s=_float(env, "ECO_ENQUEUE_TIMEOUT_S", defaults.enqueue_timeout_s, minimum=0.1),
            deferred_max_rows=_int(env, "ECO_DEFERRED_MAX_ROWS", defaults.deferred_max_rows, minimum=1),
            deferred_retry_s=_float(env, "ECO_DEFERRED_RETRY_S", defaults.deferred_retry_s, minimum=0.01),
            gc_gen0_threshold=_int(env, "ECO_GC_GEN0_THRESHOLD", defaults.gc_gen0_threshold),
            relay=RelaySettings(
                batch_size=_int(env, "ECO_RELAY_BATCH", relay_defaults.batch_size, minimum=1),
                poll_s=_float(env, "ECO_RELAY_POLL_S", relay_defaults.poll_s, minimum=0.01),
                max_attempts=_int(env, "ECO_RELAY_MAX_ATTEMPTS", relay_defaults.max_attempts, minimum=1),
                max_age_s=_float(env, "ECO_RELAY_MAX_AGE_S", relay_defaults.max_age_s, minimum=0.0),
                orphan_max_attempts=_int(
                    env, "ECO_RELAY_ORPHAN_MAX_ATTEMPTS", relay_defaults.orphan_max_attempts, minimum=1
                ),
                loops=_int(env, _aliased(env, "ECO_RELAY_LOOPS", "ECO_RELAY_WORKERS"), relay_defaults.loops),
                coalesce_ms=_float(env, "ECO_RELAY_COALESCE_MS", relay_defaults.coalesce_ms),
                claim_timeout_s=_float(
                    env, "ECO_RELAY_CLAIM_TIMEOUT_S", relay_defaults.claim_timeout_s, minimum=0.1
                ),
                unhealthy_batches=_int(
                    env, "ECO_RELAY_UNHEALTHY_BATCHES", relay_defaults.unhealthy_batches, minimum=1
                ),
                backoff=Backoff(
                    base_ms=_float(env, "ECO_RELAY_BACKOFF_BASE_MS", backoff_defaults.base_ms, minimum=1),
                    cap_ms=_float(env, "ECO_RELAY_BACKOFF_CAP_MS", backoff_defaults.cap_ms, minimum=1),
                ),
            ),
            purge=PurgeSettings(
                retention_s=_float(env, "ECO_OUTBOX_RETENTION_S", purge_defaults.retention_s),
                dead_retention_s=_float(env, "ECO_OUTBOX_DEAD_RETENTION_S", purge_defaults.dead_retention_s),
                interval_s=_float(
                    env, "ECO_OUTBOX_PURGE_INTERVAL_S", purge_defaults.interval_s, minimum=0.01
                ),
                batch=_int(env, "ECO_OUTBOX_PURGE_BATCH", purge_defaults.batch, minimum=1),
            ),
            sse_ping_s=_float(env, "ECO_SSE_PING_S", defaults.sse_ping_s, minimum=0.01),
            offline_chunk_delay_ms=_float(env, "ECO_OFFLINE_CHUNK_DELAY_MS", defaults.offline_chunk_delay_ms),
            rate_limit_per_s=_float(env, "ECO_RATE_LIMIT_PER_S", defaults.rate_limit_per_s),
            rate_limit_burst=_float(env, "ECO_RATE_LIMIT_BURST", defaults.rate_limit_burst, minimum=1),
            sse_send_timeout_s=_float(
                env, "ECO_SSE_SEND_TIMEOUT_S", defaults.sse_send_timeout_s, minimum=0.1
            ),
            header_timeout_s=_float(env, "ECO_HEADER_TIMEOUT_S", defaults.header_timeout_s, minimum=0.1),
            body_timeout_s=_float(env, "ECO_BODY_TIMEOUT_S", defaults.body_timeout_s, minimum=0.1),
            admin_token=_secret(env, "ECO_ADMIN_TOKEN"),
            # ECO_CORS_ORIGINS replaces the defaults; the ECO backend's CORS_ALLOWLIST adds to them.
            cors_origins=tuple(
                dict.fromkeys(
                    (
                        _origins(env, "ECO_CORS_ORIGINS")
                        if "ECO_CORS_ORIGINS" in env
                        else defaults.cors_origins
                    )
                    + _origins(env, "CORS_ALLOWLIST")
                )
            ),
            trusted_proxies=_networks(env, "ECO_TRUSTED_PROXIES"),
            log_json=_bool(env, "ECO_LOG_JSON", defaults.log_json),
            log_level=env.get("ECO_LOG_LEVEL", defaults.log_level).upper(),
            llm_url=env.get("ECO_LLM_URL") or None,
            llm_api_key=env.get("ECO_LLM_API_KEY") or None,
            llm_model=env.get("ECO_LLM_MODEL") or defaults.llm_model,
            llm_timeout_s=_float(env, "ECO_LLM_TIMEOUT_S", defaults.llm_timeout_s, minimum=0.1),
            llm_modules=_module_keys(env, "ECO_LLM_MODULES"),
            limits=Limits(
                signal_body_bytes=_int(
                    env, "ECO_SIGNAL_MAX_BODY_BYTES", limit_defaults.signal_body_bytes, minimum=64
                ),
                ask_body_bytes=_int(env, "ECO_ASK_MAX_BODY_BYTES", limit_defaults.ask_body_bytes, minimum=64),
                signal_batch_items=_int(
                    env, "ECO_SIGNAL_MAX_BATCH", limit_defaults.signal_batch_items, minimum=1
                ),
                signal_name_chars=_int(
                    env, "ECO_SIGNAL_MAX_NAME_CHARS", limit_defaults.signal_name_chars, minimum=1
                ),
                signal_meta_bytes=_int(
                    env, "ECO_SIGNAL_MAX_META_BYTES", limit_defaults.signal_meta_bytes, minimum=2
                ),
                signal_meta_depth=_int(
                    env, "ECO_SIGNAL_MAX_META_DEPTH", limit_defaults.signal_meta_depth, minimum=1
                ),
                ask_message_chars=_int(
                    env, "ECO_ASK_MAX_MESSAGE_CHARS", limit_defaults.ask_message_chars, minimum=1
                ),
            ),
        )
