"""Configuration from environment variables, with defaults that run on a laptop."""

from __future__ import annotations

import os
from pathlib import Path

# Default ports of each service; NIGHTSHIFT_<SERVICE>_ADDR overrides them.
DEFAULT_ADDRS = {
    "sandbox": "127.0.0.1:50061",
    "agent": "127.0.0.1:50062",
    "trainer": "127.0.0.1:50063",
    "evaluator": "127.0.0.1:50064",
}
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def service_addr(service: str) -> str:
    """Address of a service, from NIGHTSHIFT_<SERVICE>_ADDR or its default."""
    return env_str(f"NIGHTSHIFT_{service.upper()}_ADDR", DEFAULT_ADDRS[service])


def nats_url() -> str:
    return env_str("NIGHTSHIFT_NATS_URL", DEFAULT_NATS_URL)


def data_dir() -> Path:
    """Root of every service's own store (NIGHTSHIFT_DATA_DIR, default ~/.local/share/nightshift)."""
    default = Path.home() / ".local" / "share" / "nightshift"
    return Path(env_str("NIGHTSHIFT_DATA_DIR", str(default))).expanduser()
