"""Configuration: `config/default.toml`, then an optional file named by SECUREX_CONFIG,
then `SECUREX_*` environment variables. Secrets never come from here."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securex.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "config" / "default.toml"


def _env_name(section: str | None, key: str) -> str:
    parts = ["SECUREX", section, key] if section else ["SECUREX", key]
    return "_".join(p.upper() for p in parts if p)


def _coerce(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} doit valoir true ou false, pas {raw!r}.")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} doit être un nombre entier, pas {raw!r}.") from None
    return raw


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif key not in base:
            raise ConfigError(f"Clé de configuration inconnue : {key}.")
        else:
            base[key] = value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Fichier de configuration introuvable : {path}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Fichier de configuration illisible ({path}) : {exc}.") from None


@dataclass(frozen=True)
class Settings:
    """The resolved configuration, as nested dictionaries with typed accessors."""

    values: Mapping[str, Any]

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            node = node[part]
        return node

    @property
    def instance(self) -> Path:
        return Path(self.values["instance"]).expanduser().resolve()

    @property
    def database_url(self) -> str:
        url = str(self["database.url"])
        return url or f"sqlite:///{self.instance / 'securex.db'}"


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings; `overrides` (nested like the TOML) wins over everything."""
    env = os.environ if environ is None else environ
    values = _read_toml(DEFAULT_FILE)
    if env.get("SECUREX_CONFIG"):
        _merge(values, _read_toml(Path(env["SECUREX_CONFIG"])))
    for key, default in list(values.items()):
        if isinstance(default, dict):
            for sub, sub_default in default.items():
                name = _env_name(key, sub)
                if name in env:
                    default[sub] = _coerce(name, env[name], sub_default)
        else:
            name = _env_name(None, key)
            if name in env:
                values[key] = _coerce(name, env[name], default)
    if overrides:
        _merge(values, overrides)
    return Settings(values)
