"""Where the service is and which key to send: from arguments, else the environment (`MODELPRESS_URL`,
`MODELPRESS_API_KEY`), else the config file (`MODELPRESS_CONFIG`, default `~/.config/modelpress/config.toml`,
under `$XDG_CONFIG_HOME` when set), else `http://127.0.0.1:8000` and no key. The file holds:

    url = "https://modelpress.example.com"
    api_key = "mp_..."
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class ConfigError(ValueError):
    """The config file cannot be read or holds something else than expected."""


def config_path() -> Path:
    if os.environ.get("MODELPRESS_CONFIG"):
        return Path(os.environ["MODELPRESS_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "modelpress" / "config.toml"


def read_config(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    unknown = set(config) - {"url", "api_key"}
    if unknown or not all(isinstance(value, str) for value in config.values()):
        raise ConfigError(f"{path}: only the strings url and api_key are allowed (found {sorted(config)})")
    return config


def resolve(url: str | None = None, api_key: str | None = None) -> tuple[str, str | None]:
    """(url, api_key), each from the first place that gives it."""
    config = {} if url and api_key else read_config()
    return (url or os.environ.get("MODELPRESS_URL") or config.get("url") or DEFAULT_URL,
            api_key or os.environ.get("MODELPRESS_API_KEY") or config.get("api_key"))
