"""Settings: defaults in one place, read from a YAML file, ``MESHLOOP_*`` and flags.

Precedence (highest first): command-line flags, ``MESHLOOP_<NAME>`` environment
variables, the YAML file given by ``--config`` (or ``MESHLOOP_CONFIG``), defaults.
Every setting has one name used in all three places: ``http_port`` in YAML is
``MESHLOOP_HTTP_PORT`` in the environment and ``--http-port`` on the command line.

A malformed or unknown key is a :class:`~meshloop.errors.ConfigError` naming the file
(or ``environment`` / ``command line``), the key and the problem.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from meshloop.errors import ConfigError

ENV_PREFIX = "MESHLOOP_"


@dataclass(frozen=True)
class Option:
    """One setting: its type, default and the help text shown by ``--help``."""

    name: str
    kind: type
    default: Any
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("data_dir", Path, Path("meshloop-data"), "directory holding all state (store, WAL, CA)"),
    Option("bind", str, "127.0.0.1", "address every listener binds to"),
    Option("http_port", int, 8080, "HTTP API: /healthz, /readyz, /metrics (0 = pick a free port)"),
    Option(
        "clickhouse_http_port",
        int,
        8123,
        "ClickHouse HTTP interface of the embedded store (0 = pick a free port)",
    ),
    Option(
        "clickhouse_url",
        str,
        None,
        "use a ClickHouse server instead of the embedded store: http://user:pass@host:8123/db",
        secret=True,
    ),
    Option(
        "clickhouse_cluster",
        str,
        None,
        "ClickHouse cluster name: DDL gets ON CLUSTER, Replicated engines and Distributed tables",
    ),
    Option("database", str, "meshloop", "ClickHouse database holding meshloop's tables"),
    Option("retention_days", int, 30, "TTL of telemetry tables in days (0 = keep forever)"),
    Option(
        "clickhouse_password",
        str,
        None,
        "password of the embedded store's 'default' user over HTTP (none = no password)",
        secret=True,
    ),
    Option(
        "clickhouse_readonly_password",
        str,
        None,
        "enables a read-only HTTP user 'readonly' with this password (for dashboards)",
        secret=True,
    ),
    Option(
        "admin_token",
        str,
        None,
        "bearer token for admin endpoints; required when --bind is not a loopback address",
        secret=True,
    ),
    Option("log_level", str, "info", "debug, info, warning or error"),
    Option(
        "collector_port",
        int,
        4317,
        "collector gRPC: Envoy ALS, Envoy metrics service, OTLP logs/metrics/traces (0 = pick a free port)",
    ),
    Option("max_message_bytes", int, 4 << 20, "largest gRPC message the collector accepts, in bytes"),
    Option("wal_max_bytes", int, 1 << 30, "disk cap of the write-ahead log; past it intake is refused"),
    Option("wal_fsync_interval", float, 0.1, "seconds between WAL fsyncs (0 = fsync every append)"),
    Option("flush_interval", float, 1.0, "seconds the collector gathers telemetry before one insert"),
    Option("flush_max_bytes", int, 64 << 20, "payload bytes that trigger an insert before flush_interval"),
    Option("window_lateness", float, 5.0, "seconds an entry may arrive after its 1 s window and still count"),
    Option("mesh_dir", Path, None, "directory of Istio YAML (VirtualService, DestinationRule, ...), watched"),
    Option(
        "xds_port", int, 15010, "xDS (ADS: state of the world and delta), plaintext (0 = pick a free port)"
    ),
    Option("xds_secure_port", int, 15012, "CA (IstioCertificateService) over TLS (0 = pick a free port)"),
    Option("trust_domain", str, "cluster.local", "SPIFFE trust domain of issued workload certificates"),
    Option(
        "ca_cert",
        Path,
        None,
        "your CA certificate (root, or intermediate + chain) instead of a generated root",
    ),
    Option("ca_key", Path, None, "the private key of ca_cert (must be mode 0600)"),
    Option(
        "ca_token_file", Path, None, "bootstrap tokens: YAML 'tokens: [{token, namespace, serviceAccount}]'"
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one meshloop process. Build with :func:`load_settings`."""

    data_dir: Path = Path("meshloop-data")
    bind: str = "127.0.0.1"
    http_port: int = 8080
    clickhouse_http_port: int = 8123
    clickhouse_url: str | None = None
    clickhouse_cluster: str | None = None
    database: str = "meshloop"
    retention_days: int = 30
    clickhouse_password: str | None = None
    clickhouse_readonly_password: str | None = None
    admin_token: str | None = None
    log_level: str = "info"
    collector_port: int = 4317
    max_message_bytes: int = 4 << 20
    wal_max_bytes: int = 1 << 30
    wal_fsync_interval: float = 0.1
    flush_interval: float = 1.0
    flush_max_bytes: int = 64 << 20
    window_lateness: float = 5.0
    mesh_dir: Path | None = None
    xds_port: int = 15010
    xds_secure_port: int = 15012
    trust_domain: str = "cluster.local"
    ca_cert: Path | None = None
    ca_key: Path | None = None
    ca_token_file: Path | None = None
    config_file: Path | None = field(default=None)

    @property
    def bind_is_loopback(self) -> bool:
        """True when every listener is reachable only from this host."""
        if self.bind == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.bind).is_loopback
        except ValueError:
            return False

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced by ``***`` (for logs and status)."""
        out: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.secret and value is not None:
                value = "***"
            out[option.name] = str(value) if isinstance(value, Path) else value
        return out


def _coerce(option: Option, raw: Any, source: str) -> Any:
    """Convert ``raw`` (YAML value or string) to the option's type, or raise ConfigError."""
    if raw is None:
        return None
    if option.kind is int:
        if isinstance(raw, bool):
            raise ConfigError(source, option.name, f"expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(source, option.name, f"expected an integer, got {raw!r}") from None
    if option.kind is float:
        if isinstance(raw, bool):
            raise ConfigError(source, option.name, f"expected a number, got {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(source, option.name, f"expected a number, got {raw!r}") from None
    if option.kind is Path:
        if not isinstance(raw, str | Path):
            raise ConfigError(source, option.name, f"expected a path, got {raw!r}")
        return Path(raw)
    if not isinstance(raw, str):
        raise ConfigError(source, option.name, f"expected a string, got {raw!r}")
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML settings file into ``{name: raw value}``; unknown keys are errors."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, "(yaml)", f"invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", "expected a mapping of setting: value")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTIONS_BY_NAME:
            raise ConfigError(source, str(key), f"unknown setting (known: {', '.join(OPTIONS_BY_NAME)})")
        out[name] = _coerce(OPTIONS_BY_NAME[name], value, source)
    return out


PROCESS_VARIABLES = frozenset({
    "MESHLOOP_ALS_DECODE_LIBRARY",  # meshloop.accesslog.native.LIBRARY_ENV: a sanitizer build
    "MESHLOOP_NATIVE_STRINGS_LIBRARY",  # meshloop.store.native_format.LIBRARY_ENV, likewise
})  # fmt: skip
"""``MESHLOOP_*`` variables the process reads beside its settings (library overrides): not settings."""


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``MESHLOOP_*`` variables; an unknown ``MESHLOOP_`` name is an error."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        if key.startswith(ENV_PREFIX + "TEST_") or key in PROCESS_VARIABLES:
            continue  # test-suite knobs (MESHLOOP_TEST_CLICKHOUSE_URL) and process knobs
        name = key[len(ENV_PREFIX) :].lower()
        if name not in OPTIONS_BY_NAME:
            raise ConfigError("environment", key, "unknown setting")
        out[name] = _coerce(OPTIONS_BY_NAME[name], value, "environment")
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings: ``flags`` over ``environ`` over the YAML file over defaults.

    ``flags`` holds only the flags the user gave (``None`` values are ignored).
    ``config_file`` defaults to ``MESHLOOP_CONFIG`` from ``environ``.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update(read_environment(environ))
    for name, value in (flags or {}).items():
        if value is not None:
            merged[name] = _coerce(OPTIONS_BY_NAME[name], value, "command line")
    settings = dataclasses.replace(Settings(), config_file=config_file, **merged)
    validate(settings, str(config_file) if config_file else "settings")
    return settings


def validate(settings: Settings, source: str) -> None:
    """Check ranges and cross-setting rules; raise ConfigError naming the key."""
    for name in ("http_port", "clickhouse_http_port", "collector_port", "xds_port", "xds_secure_port"):
        port = getattr(settings, name)
        if not 0 <= port <= 65535:
            raise ConfigError(source, name, f"port {port} is outside 0-65535")
    positive = ("max_message_bytes", "wal_max_bytes", "flush_interval", "flush_max_bytes")
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigError(source, name, "must be greater than 0")
    for name in ("wal_fsync_interval", "window_lateness"):
        if getattr(settings, name) < 0:
            raise ConfigError(source, name, "must be 0 or more")
    if settings.retention_days < 0:
        raise ConfigError(source, "retention_days", "must be 0 (keep forever) or more")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(source, "log_level", f"expected one of {', '.join(LOG_LEVELS)}")
    for name in ("database", "clickhouse_cluster"):
        value = getattr(settings, name)
        if value is not None and not value.replace("_", "a").isalnum():
            raise ConfigError(source, name, f"{value!r} must be letters, digits and _")
    if (settings.ca_cert is None) != (settings.ca_key is None):
        raise ConfigError(
            source, "ca_cert" if settings.ca_cert is None else "ca_key", "ca_cert and ca_key go together"
        )
    if settings.clickhouse_url:
        parts = urlsplit(settings.clickhouse_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                source, "clickhouse_url", "expected http(s)://[user:pass@]host[:port][/database]"
            )
    if not settings.bind_is_loopback and not settings.admin_token:
        raise ConfigError(
            source,
            "admin_token",
            f"required when binding to {settings.bind} (beyond loopback): "
            "set --admin-token or MESHLOOP_ADMIN_TOKEN",
        )
